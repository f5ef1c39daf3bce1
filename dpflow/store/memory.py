"""An in-memory chunk store that keeps the same contract as the disk store.

For tests of anything built on chunks (the pipeline, restores, verify) that need a store
without a directory, and as the second implementation the conformance suite checks: it
enforces the contract (ids checked on put, nothing visible before flush, every read
hashed, no use after close) instead of trusting its callers. A `MemoryMedium` is the
shared storage; each `MemoryChunkStore` on it is one store object (one process's view).
"""

from __future__ import annotations

import threading

from dpflow.store.chunks import CorruptChunk, chunk_id
from dpflow.store.crypto import Sealer
from dpflow.store.protocol import StoreClosed


class MemoryMedium:
    """The durable part: chunk id → stored blob (sealed when the store is encrypted)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def damage(self, cid: str) -> None:
        """Flip the last byte of a stored chunk (a bad sector, for tests)."""
        with self.lock:
            b = self.blobs[cid]
            self.blobs[cid] = b[:-1] + bytes([b[-1] ^ 0xFF])

    def lose(self, cid: str) -> None:
        """Drop a stored chunk (a deleted pack, for tests)."""
        with self.lock:
            del self.blobs[cid]


class MemoryChunkStore:
    """One store object on a MemoryMedium. Keeps ChunkStoreProtocol."""

    def __init__(self, medium: MemoryMedium | None = None, *, key: bytes | None = None) -> None:
        self.medium = medium if medium is not None else MemoryMedium()
        self.sealer = Sealer(key) if key else None
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def encrypted(self) -> bool:
        return self.sealer is not None

    def _open(self) -> None:
        if self._closed:
            raise StoreClosed("memory store was closed")

    def chunk_id(self, data: bytes | memoryview) -> str:
        return self.sealer.chunk_id(data) if self.sealer else chunk_id(data)

    def has(self, cid: str) -> bool:
        self._open()
        with self._lock:
            if cid in self._pending:
                return True
        with self.medium.lock:
            return cid in self.medium.blobs

    def put(self, cid: str, data: bytes | memoryview) -> int:
        self._open()
        if self.chunk_id(data) != cid:
            raise ValueError(f"chunk id {cid} is not the id of the {len(data)} bytes given")
        with self.medium.lock:
            if cid in self.medium.blobs:
                return 0
        blob = self.sealer.seal(bytes(data), cid.encode()) if self.sealer else bytes(data)
        with self._lock:
            if cid in self._pending:
                return 0
            self._pending[cid] = blob
        return len(blob)

    def flush(self) -> None:
        self._open()
        with self._lock:
            pending, self._pending = self._pending, {}
        with self.medium.lock:
            for cid, blob in pending.items():
                self.medium.blobs.setdefault(cid, blob)

    def abandon(self) -> None:
        with self._lock:
            self._pending = {}

    def get(self, cid: str) -> bytes:
        self._open()
        with self.medium.lock:
            blob = self.medium.blobs.get(cid)
        if blob is None:
            raise CorruptChunk(f"chunk {cid} is missing from the memory store")
        if self.sealer:
            try:
                blob = self.sealer.open(blob, cid.encode())
            except ValueError as exc:
                raise CorruptChunk(f"chunk {cid} fails authentication (damaged or "
                                   f"tampered with)") from exc
        if self.chunk_id(blob) != cid:
            raise CorruptChunk(f"chunk {cid} does not match its hash (damaged)")
        return blob

    def all_chunk_ids(self) -> set[str]:
        self._open()
        with self.medium.lock:
            return set(self.medium.blobs)

    def close(self) -> None:
        self.abandon()
        self._closed = True

"""The chunk store: content-addressed, compressed, optionally encrypted chunks in packs.

A chunk's id is the blake3 digest of its plain bytes (keyed when the store is encrypted),
so identical data from any disk, VM or day is stored once, and every read proves it got
the bytes that were written. Format: docs/store-format.md. The contract it keeps (what
put, has, flush, get and close guarantee) is written in dpflow/store/protocol.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import blake3
import zstandard

from dpflow.errors import NotFound, PermanentError, UserError
from dpflow.store.crypto import Sealer
from dpflow.store.durable import write_atomic
from dpflow.store.packs import PackIndex, PackWriter, pack_path
from dpflow.store.protocol import StoreClosed

CODEC_RAW = 0
CODEC_ZSTD = 1
FORMAT_VERSION = 2
PACK_TARGET = 32 << 20


MAX_OPEN_PACKS = 64


class _OpenPack:
    """An open pack descriptor and how many reads use it right now."""

    __slots__ = ("evicted", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd, self.users, self.evicted = fd, 0, False


class CorruptChunk(PermanentError):
    """A chunk is missing, unreadable, or its bytes do not hash to its id."""


def chunk_id(data: bytes | memoryview) -> str:
    """The id of `data` in an unencrypted store."""
    return blake3.blake3(data, max_threads=1).hexdigest()


class ChunkStore:
    """One store directory. Safe for many threads and processes: chunk writes are idempotent.

    Keeps ChunkStoreProtocol. Holds open file descriptors (packs being read, SQLite
    connections): close() it, or use it as a context manager.
    """

    def __init__(self, root: Path, *, compression_level: int = 3, key: bytes | None = None,
                 pack_target: int = PACK_TARGET) -> None:
        self.root = root
        self.level = compression_level
        self.sealer = Sealer(key) if key else None
        self.pack_target = pack_target
        self.packs_dir = root / "packs"
        self.versions_dir = root / "versions"
        self.tmp_dir = root / "tmp"
        self.locks_dir = root / "locks"
        self._index: PackIndex | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writers: list[PackWriter] = []
        self._pending: set[str] = set()
        self._fds: OrderedDict[str, _OpenPack] = OrderedDict()
        self._closed = False

    # --- lifecycle -------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.root / "dpflow-store.json"

    def init(self, *, create: bool = True) -> ChunkStore:
        """Open the store, checking format and key; an absent or empty directory becomes a
        new store only with `create` (a backup), else NotFound: a mistyped path must not
        look like an empty store to verify, restore or prune."""
        if not create and not self.marker.exists():
            raise NotFound(f"no store at {self.root}: check stores[].path in the config "
                           f"(the first backup creates the store)")
        if self.marker.exists():
            meta = json.loads(self.marker.read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise UserError(f"store {self.root} has format {meta.get('format')}, "
                                f"this dpflow reads format {FORMAT_VERSION}")
            if meta.get("key_check") and self.sealer is None:
                raise UserError(f"store {self.root} is encrypted: give its key "
                                f"(config: stores[].key)")
            if self.sealer is not None:
                if not meta.get("key_check"):
                    raise UserError(f"store {self.root} is not encrypted but a key was given; "
                                    f"remove stores[].key or use a new store")
                self.sealer.verify_key(meta["key_check"])
        else:
            if self.root.exists() and any(self.root.iterdir()):
                raise UserError(f"store path {self.root} is not empty and not a dpflow store; "
                                f"point the config at an empty or existing store directory")
            for d in (self.packs_dir, self.versions_dir, self.tmp_dir, self.locks_dir):
                d.mkdir(parents=True, exist_ok=True)
            for i in range(256):
                (self.packs_dir / f"{i:02x}").mkdir(exist_ok=True)
            meta = {"format": FORMAT_VERSION}
            if self.sealer:
                meta["key_check"] = self.sealer.key_check()
            write_atomic(self.marker, json.dumps(meta).encode(), self.tmp_dir)
        self._index = PackIndex(self.root / "index.sqlite")
        return self

    @property
    def index(self) -> PackIndex:
        self._open()
        if self._index is None:
            raise RuntimeError("store not opened: call init()")
        return self._index

    @property
    def encrypted(self) -> bool:
        return self.sealer is not None

    # --- ids and codecs --------------------------------------------------------
    def chunk_id(self, data: bytes | memoryview) -> str:
        """The id of `data` in this store (keyed when the store is encrypted)."""
        return self.sealer.chunk_id(data) if self.sealer else chunk_id(data)

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "zc", None)
        if c is None:
            c = self._local.zc = zstandard.ZstdCompressor(level=self.level)
        return c

    def encode(self, cid: str, data: bytes | memoryview) -> bytes:
        packed = self._compressor().compress(data)
        blob = bytes([CODEC_ZSTD]) + packed if len(packed) < len(data) else \
            bytes([CODEC_RAW]) + data
        return self.sealer.seal(blob, cid.encode()) if self.sealer else blob

    def decode(self, cid: str, blob: bytes) -> bytes:
        if self.sealer:
            try:
                blob = self.sealer.open(blob, cid.encode())
            except ValueError as exc:
                raise CorruptChunk(f"chunk {cid} fails authentication (damaged or "
                                   f"tampered with)") from exc
        codec, body = blob[0], blob[1:]
        try:
            if codec == CODEC_ZSTD:
                d = getattr(self._local, "zd", None)
                if d is None:
                    d = self._local.zd = zstandard.ZstdDecompressor()
                data = d.decompress(body)
            elif codec == CODEC_RAW:
                data = bytes(body)
            else:
                raise CorruptChunk(f"chunk {cid} has unknown codec {codec}")
        except zstandard.ZstdError as exc:
            raise CorruptChunk(f"chunk {cid} does not decompress: {exc}") from exc
        if self.chunk_id(data) != cid:
            raise CorruptChunk(f"chunk {cid} does not match its hash (damaged on disk)")
        return data

    # --- writing ---------------------------------------------------------------
    def _open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.root} was closed")

    def has(self, cid: str) -> bool:
        self._open()
        with self._lock:
            if cid in self._pending:
                return True
        return self.index.lookup(cid) is not None

    def put(self, cid: str, data: bytes | memoryview) -> int:
        """Store `data` under `cid` unless present; returns the bytes added to the store.

        The chunk is durable only after flush(): call it before a manifest refers to it.
        """
        self._open()
        with self._lock:
            if cid in self._pending:
                return 0
            self._pending.add(cid)
        if self.index.lookup(cid) is not None:
            with self._lock:
                self._pending.discard(cid)
            return 0
        if self.chunk_id(data) != cid:
            with self._lock:
                self._pending.discard(cid)
            raise ValueError(f"chunk id {cid} is not the id of the {len(data)} bytes given")
        blob = self.encode(cid, data)
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = PackWriter(self.tmp_dir)
            with self._lock:
                self._writers.append(writer)
        writer.append(cid, blob)
        if writer.size >= self.pack_target:
            self._local.writer = None
            with self._lock:
                self._writers.remove(writer)
            self._seal(writer)
        return len(blob)

    def _seal(self, writer: PackWriter) -> None:
        name, _ = writer.seal(self.packs_dir)
        self.index.add(name, writer.entries)
        with self._lock:
            self._pending.difference_update(c for c, _, _ in writer.entries)

    def flush(self) -> None:
        """Seal every open pack: all chunks put so far are durable and indexed after this."""
        self._open()
        with self._lock:
            writers, self._writers = self._writers, []
        self._local = threading.local()
        for w in writers:
            if w.entries:
                self._seal(w)
            else:
                w.abandon()

    def abandon(self) -> None:
        """Drop open packs (a failed session): their chunks never become visible."""
        with self._lock:
            writers, self._writers = self._writers, []
            self._pending.clear()
        self._local = threading.local()
        for w in writers:
            w.abandon()

    # --- reading ---------------------------------------------------------------
    def _open_pack(self, pack: str) -> _OpenPack:
        """A pack's read descriptor, counted in use until _release: an LRU eviction never
        closes a descriptor another thread is reading (its number could be reused by the
        next open and the read would return another pack's bytes)."""
        with self._lock:
            op = self._fds.get(pack)
            if op is None:
                op = self._fds[pack] = _OpenPack(os.open(pack_path(self.packs_dir, pack),
                                                         os.O_RDONLY))
                while len(self._fds) > MAX_OPEN_PACKS:
                    _, old = self._fds.popitem(last=False)
                    old.evicted = True
                    if old.users == 0:
                        os.close(old.fd)
            else:
                self._fds.move_to_end(pack)
            op.users += 1
            return op

    def _release(self, op: _OpenPack) -> None:
        with self._lock:
            op.users -= 1
            if op.evicted and op.users == 0:
                os.close(op.fd)

    def read_blob(self, cid: str) -> bytes:
        loc = self.index.lookup(cid)
        if loc is None:
            raise CorruptChunk(f"chunk {cid} is missing from store {self.root}")
        pack, offset, length = loc
        try:
            op = self._open_pack(pack)
        except FileNotFoundError as exc:
            raise CorruptChunk(f"chunk {cid}: its pack {pack} is missing") from exc
        try:
            blob = os.pread(op.fd, length, offset)
        finally:
            self._release(op)
        if len(blob) != length:
            raise CorruptChunk(f"chunk {cid}: its pack {pack} is truncated")
        return blob

    def get(self, cid: str) -> bytes:
        """The plain bytes of a chunk, proven by their hash."""
        return self.decode(cid, self.read_blob(cid))

    def all_chunk_ids(self) -> set[str]:
        return {row[0] for row in self.index.entries()}

    def close(self) -> None:
        """Abandon what is pending, close every pack and SQLite connection. Idempotent."""
        if self._closed:
            return
        self.abandon()
        with self._lock:
            self._closed = True
            packs, self._fds = list(self._fds.values()), OrderedDict()
        for op in packs:
            os.close(op.fd)
        if self._index is not None:
            self._index.close()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Content-addressed chunk files.

A chunk's id is the blake3 digest of its plain bytes, so identical data from any disk or
VM is stored once, and every read can prove it got the bytes that were written. Chunks are
fanned out over 256 directories by the first id byte (docs/store-format.md has the figures
behind that choice for v1).
"""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import zstandard

from dpflow.errors import PermanentError, UserError
from dpflow.store.durable import fsync_dir, write_atomic

MAGIC = b"DPC1"
CODEC_RAW = 0
CODEC_ZSTD = 1
FORMAT_VERSION = 1


class CorruptChunk(PermanentError):
    """A chunk is missing, unreadable, or its bytes do not hash to its id."""


def chunk_id(data: bytes) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


class ChunkStore:
    """One store directory. Safe for many threads and processes: writes are idempotent."""

    def __init__(self, root: Path, *, compression_level: int = 3) -> None:
        self.root = root
        self.level = compression_level
        self.chunks_dir = root / "chunks"
        self.versions_dir = root / "versions"
        self.tmp_dir = root / "tmp"

    # --- lifecycle -------------------------------------------------------------
    def init(self) -> ChunkStore:
        """Create the layout if missing; refuse a directory that is something else."""
        marker = self.root / "dpflow-store.json"
        if marker.exists():
            meta = json.loads(marker.read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise UserError(f"store {self.root} has format {meta.get('format')}, "
                                f"this dpflow reads format {FORMAT_VERSION}")
            return self
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"store path {self.root} is not empty and not a dpflow store; "
                            f"point the config at an empty or existing store directory")
        for d in (self.chunks_dir, self.versions_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for i in range(256):
            (self.chunks_dir / f"{i:02x}").mkdir(exist_ok=True)
        write_atomic(marker, json.dumps({"format": FORMAT_VERSION}).encode(), self.tmp_dir)
        return self

    # --- chunks ----------------------------------------------------------------
    def path_of(self, cid: str) -> Path:
        return self.chunks_dir / cid[:2] / cid

    def chunk_id(self, data: bytes) -> str:
        """The id of `data` in this store (keyed when the store is encrypted)."""
        return chunk_id(data)

    def has(self, cid: str) -> bool:
        return self.path_of(cid).exists()

    def put(self, cid: str, data: bytes) -> int:
        """Store `data` under `cid` unless present; returns the bytes added to the store."""
        path = self.path_of(cid)
        if path.exists():
            return 0
        packed = zstandard.ZstdCompressor(level=self.level).compress(data)
        codec = CODEC_ZSTD
        if len(packed) >= len(data):
            packed, codec = data, CODEC_RAW
        blob = MAGIC + bytes([codec]) + packed
        # the fan-out directory is fsynced once per backup (sync_dirs), not per chunk
        write_atomic(path, blob, self.tmp_dir, sync_dir=False)
        return len(blob)

    def get(self, cid: str) -> bytes:
        """The plain bytes of a chunk, proven by their hash."""
        try:
            blob = self.path_of(cid).read_bytes()
        except FileNotFoundError as exc:
            raise CorruptChunk(f"chunk {cid} is missing from store {self.root}") from exc
        if blob[:4] != MAGIC or len(blob) < 5:
            raise CorruptChunk(f"chunk {cid} has a bad header")
        codec, body = blob[4], blob[5:]
        try:
            data = zstandard.ZstdDecompressor().decompress(body) if codec == CODEC_ZSTD else body
        except zstandard.ZstdError as exc:
            raise CorruptChunk(f"chunk {cid} does not decompress: {exc}") from exc
        if chunk_id(data) != cid:
            raise CorruptChunk(f"chunk {cid} does not match its hash (damaged on disk)")
        return data

    def sync_dirs(self) -> None:
        """Make the renames of new chunks durable before a manifest refers to them.

        Chunk contents were fsynced one by one; only their directory entries remain.
        """
        for d in self.chunks_dir.iterdir():
            fsync_dir(d)

    def all_chunk_ids(self) -> set[str]:
        return {p.name for d in self.chunks_dir.iterdir() for p in d.iterdir()}

"""Block devices for the file-system parsers: a seekable file over any range reader.

`RangeFile` turns a `read(offset, length)` reader (a snapshot disk over the datastore
HTTPS interface, or `ImageDisk`) into the file object dissect expects. Parsers make many
small metadata reads, so those go through a small LRU cache of aligned blocks; large reads
(file data) go straight to the reader in one request. A reader failure is remembered, so
that a parse error caused by it is never mistaken for a damaged file system.

`ImageDisk` is a stored image version's disk as a lazily read device: chunks are fetched
from the store only when a read touches them (verified by the store), a few are cached,
and zero chunks cost nothing. Its counters tell how much of the image a restore read.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Protocol

from dpflow.store import ChunkStore, DiskManifest


class Reader(Protocol):
    def read(self, offset: int, length: int) -> bytes: ...


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over a range reader (one user thread at a time)."""

    def __init__(self, reader: Reader, size: int, *, block: int = 64 << 10,
                 cache_blocks: int = 256, direct_from: int = 256 << 10) -> None:
        super().__init__()
        self.reader, self.size = reader, size
        self.block, self.cache_blocks, self.direct_from = block, cache_blocks, direct_from
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_read = 0  # from the reader
        self.requests = 0
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + pos < 0:
            raise OSError("seek before the start of the disk")
        self._pos = base + pos
        return self._pos

    def _fetch(self, offset: int, length: int) -> bytes:
        try:
            data = self.reader.read(offset, length)
        except BaseException as exc:
            self.failure = exc
            raise
        self.bytes_read += len(data)
        self.requests += 1
        return data

    def _block(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        start = index * self.block
        data = self._fetch(start, min(self.block, self.size - start))
        self._cache[index] = data
        if len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return data

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        if length >= self.direct_from:
            return self._fetch(offset, length)
        first, last = offset // self.block, (offset + length - 1) // self.block
        buf = b"".join(self._block(i) for i in range(first, last + 1))
        skip = offset - first * self.block
        return buf[skip:skip + length]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class ImageDisk:
    """One disk of a stored image version, readable by ranges, fetched chunk by chunk."""

    def __init__(self, store: ChunkStore, disk: DiskManifest, cache_chunks: int = 8) -> None:
        self.store, self.disk, self.size = store, disk, disk.capacity_bytes
        self.cache_chunks = cache_chunks
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.chunks_fetched = 0
        self.bytes_fetched = 0

    def _chunk(self, index: int) -> bytes:
        with self._lock:
            data = self._cache.get(index)
            if data is not None:
                self._cache.move_to_end(index)
                return data
        cid = self.disk.chunks[index]
        length = min(self.disk.chunk_size, self.size - index * self.disk.chunk_size)
        if cid is None:
            data = bytes(length)
        else:
            data = self.store.get(cid)
            self.chunks_fetched += 1
            self.bytes_fetched += len(data)
        with self._lock:
            self._cache[index] = data
            if len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        cs = self.disk.chunk_size
        out = bytearray()
        pos = offset
        while pos < offset + length:
            i, skip = divmod(pos, cs)
            piece = self._chunk(i)[skip:skip + offset + length - pos]
            if not piece:
                break
            out += piece
            pos += len(piece)
        return bytes(out)

    def close(self) -> None:
        self._cache.clear()

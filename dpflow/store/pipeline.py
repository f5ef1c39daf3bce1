"""The data path: disk ranges → blake3 → zstd → chunk files, and back.

Each worker reads its own range, hashes, compresses and writes it, so reading, hashing
and compressing overlap across threads (blake3, zstandard and socket reads release the
GIL). At most `workers * 2` chunks are in flight: memory is bounded by chunk size, never
by disk size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from dpflow.store.chunks import ChunkStore, CorruptChunk
from dpflow.store.manifest import DiskManifest


class RangeReader:
    """What the pipeline needs from a disk: sized, readable by ranges from any thread."""

    size: int

    def read(self, offset: int, length: int) -> bytes:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class CopyStats:
    bytes_read: int = 0
    bytes_added: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    chunks_zero: int = 0


Progress = Callable[[int], None]


def _zero(length: int, _cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - a cache
    z = _cache.get(length)
    if z is None:
        z = _cache[length] = bytes(length)
    return z


def chunks_touching(areas: list[tuple[int, int]], chunk_size: int, size: int) -> list[int]:
    """Indexes of the chunks that (start, length) areas touch, ascending, each once."""
    out: list[int] = []
    for start, length in areas:
        first = start // chunk_size
        last = (min(start + length, size) - 1) // chunk_size
        if out and first <= out[-1]:
            first = out[-1] + 1
        out.extend(range(first, last + 1))
    return out


def backup_disk(
    reader: RangeReader,
    store: ChunkStore,
    *,
    chunk_size: int,
    workers: int,
    progress: Progress | None = None,
    only: list[int] | None = None,
    base: list[str | None] | None = None,
) -> tuple[list[str | None], CopyStats]:
    """Copy a disk into the store; returns its complete chunk list in disk order.

    `only` limits reading to those chunk indexes (changed or allocated areas); every
    other chunk is taken from `base` (the previous version's map) or is zero. The result
    is always a full map: a synthetic full.
    """
    stats = CopyStats()
    n = (reader.size + chunk_size - 1) // chunk_size
    todo = list(range(n)) if only is None else only
    chunks: list[str | None] = list(base) if base is not None else [None] * n
    if len(chunks) != n:
        raise ValueError(f"base map has {len(chunks)} chunks, the disk {n}")

    def one(index: int) -> tuple[str | None, int, int]:
        offset = index * chunk_size
        length = min(chunk_size, reader.size - offset)
        data = reader.read(offset, length)
        if len(data) != length:
            raise OSError(f"short read at {offset}: {len(data)} of {length} bytes")
        if data == _zero(length):
            return None, length, 0
        cid = store.chunk_id(data)
        return cid, length, store.put(cid, data)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dpflow-copy") as pool:
        pending: deque[tuple[int, Future[tuple[str | None, int, int]]]] = deque()
        k = 0
        try:
            while k < len(todo) or pending:
                while k < len(todo) and len(pending) < workers * 2:
                    pending.append((todo[k], pool.submit(one, todo[k])))
                    k += 1
                index, fut = pending.popleft()
                cid, length, added = fut.result()
                chunks[index] = cid
                stats.bytes_read += length
                stats.bytes_added += added
                if cid is None:
                    stats.chunks_zero += 1
                elif added:
                    stats.chunks_new += 1
                else:
                    stats.chunks_reused += 1
                if progress:
                    progress(length)
        except BaseException:
            for _, f in pending:
                f.cancel()
            pool.shutdown(wait=True)
            store.abandon()
            raise
    store.flush()
    return chunks, stats


def restore_blocks(
    store: ChunkStore, disk: DiskManifest, *, workers: int, progress: Progress | None = None
) -> Iterator[bytes]:
    """The disk's bytes in order, each chunk verified against its id as it is read."""
    size, cs = disk.capacity_bytes, disk.chunk_size

    def one(index: int) -> bytes:
        cid = disk.chunks[index]
        length = min(cs, size - index * cs)
        if cid is None:
            return _zero(length)
        data = store.get(cid)
        if len(data) != length:
            raise CorruptChunk(f"chunk {cid} has {len(data)} bytes where {length} belong")
        return data

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dpflow-restore") as pool:
        pending: deque[Future[bytes]] = deque()
        next_index = 0
        n = len(disk.chunks)
        while next_index < n or pending:
            while next_index < n and len(pending) < workers * 2:
                pending.append(pool.submit(one, next_index))
                next_index += 1
            data = pending.popleft().result()
            if progress:
                progress(len(data))
            yield data


def verify_disk(
    reader: RangeReader, disk: DiskManifest, id_of: Callable[[bytes], str], *, workers: int,
    progress: Progress | None = None,
) -> list[int]:
    """Read a written disk back and return the indexes of chunks that differ from the manifest."""
    if reader.size < disk.capacity_bytes:
        return list(range(len(disk.chunks)))
    cs = disk.chunk_size

    def one(index: int) -> bool:
        length = min(cs, disk.capacity_bytes - index * cs)
        data = reader.read(index * cs, length)
        want = disk.chunks[index]
        ok = data == _zero(length) if want is None else id_of(data) == want
        if progress:
            progress(length)
        return ok

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dpflow-verify") as pool:
        results = list(pool.map(one, range(len(disk.chunks))))
    return [i for i, ok in enumerate(results) if not ok]

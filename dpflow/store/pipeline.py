"""The data path: disk ranges (or file streams) → blake3 → zstd → chunk files, and back.

Each worker reads its own range, hashes, compresses and writes it, so reading, hashing
and compressing overlap across threads (blake3, zstandard and socket reads release the
GIL). At most `workers * 2` chunks are in flight: memory is bounded by chunk size, never
by disk size. File streams (guest files, StreamWriter) come from a file-system parser on
one thread: they are cut and hashed there, and compressed and written by `workers`
threads under the same bound, with the same zero test and the same commit and abandon.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import blake3

from dpflow.store.chunks import CorruptChunk
from dpflow.store.manifest import DiskManifest
from dpflow.store.protocol import ChunkStoreProtocol

T = TypeVar("T")


class RangeReader(Protocol):
    """What the pipeline needs from a disk: sized, readable by ranges from any thread
    (drivers.protocols.DiskReader is one)."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


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


class _ZeroIds:
    """The id of an all-zero chunk of each length: hashing (10 GB/s) also tells zeros
    apart, so no chunk is compared byte by byte."""

    def __init__(self, store: ChunkStoreProtocol) -> None:
        self.store = store
        self._ids: dict[int, str] = {}

    def is_zero(self, cid: str, length: int) -> bool:
        z = self._ids.get(length)
        if z is None:
            z = self._ids[length] = self.store.chunk_id(_zero(length))
        return cid == z


class StreamWriter:
    """Byte streams (guest files) into the store, through the same steps as a disk: cut at
    offsets that are multiples of the chunk size, hashed, all-zero chunks not stored, the
    rest put by `workers` threads with at most 2 × workers chunks in flight (memory is
    bounded by chunk size, never by file size). commit() makes every chunk durable;
    abandon() is the compensation of a failed copy: nothing it wrote becomes visible."""

    def __init__(self, store: ChunkStoreProtocol, chunk_size: int, workers: int) -> None:
        self.store, self.chunk_size = store, chunk_size
        self.stats = CopyStats()
        self._zeros = _ZeroIds(store)
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="dpflow-put")
        self._inflight: deque[Future[int]] = deque()
        self._limit = 2 * max(1, workers)

    def write(self, pieces: Iterable[bytes], size: int) -> tuple[str, list[str | None], int]:
        """One stream's bytes in order, in pieces of any size; returns its blake3 digest,
        its chunk map (None = zeros) and its length. The same bytes give the same chunks
        however they were read."""
        h = blake3.blake3(max_threads=1)
        chunks: list[str | None] = []
        total = 0
        cs = self.chunk_size
        carry = b""
        for piece in pieces:
            total += len(piece)
            h.update(piece)
            buf = carry + piece if carry else piece
            whole = len(buf) - len(buf) % cs
            for at in range(0, whole, cs):
                chunks.append(self._chunk(buf[at:at + cs]))
            carry = buf[whole:]
        if carry:
            chunks.append(self._chunk(carry))
        if total != size:
            raise OSError(f"stream is {total} bytes, its size says {size}")
        self.stats.bytes_read += total
        return h.hexdigest(), chunks, total

    def _chunk(self, data: bytes) -> str | None:
        cid = self.store.chunk_id(data)
        if self._zeros.is_zero(cid, len(data)):
            self.stats.chunks_zero += 1
            return None
        self._inflight.append(self._pool.submit(self.store.put, cid, data))
        self._drain(self._limit)
        return cid

    def _drain(self, keep: int) -> None:
        while len(self._inflight) > keep:
            added = self._inflight.popleft().result()
            self.stats.bytes_added += added
            if added:
                self.stats.chunks_new += 1
            else:
                self.stats.chunks_reused += 1

    def commit(self) -> None:
        """Wait for every put, then flush: all chunks written so far are durable."""
        try:
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)
        self.store.flush()

    def abandon(self) -> None:
        """Stop, wait for the threads, and drop every chunk not yet made durable."""
        for f in self._inflight:
            f.cancel()
        self._pool.shutdown(wait=True)
        self._inflight.clear()
        self.store.abandon()


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


READ_SPAN = 4 << 20  # one HTTP range request covers this much (many chunks)
MAX_GAP = 256 << 10  # unwanted bytes a request may read through to join two wanted runs


def runs_of(indexes: list[int], max_len: int, max_gap: int = 0) -> list[list[int]]:
    """Ascending chunk indexes grouped into runs, one range request each: a run spans at
    most `max_len` chunks and may skip gaps of up to `max_gap` unwanted chunks (reading a
    few extra KiB is cheaper than another request when CBT reports scattered blocks)."""
    out: list[list[int]] = []
    for i in indexes:
        if out and i - out[-1][-1] <= max_gap + 1 and i - out[-1][0] < max_len:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _read_run(reader: RangeReader, run: list[int], chunk_size: int) -> list[memoryview]:
    """The chunks of `run` (ascending indexes, maybe with gaps) from one range read."""
    offset = run[0] * chunk_size
    length = min((run[-1] - run[0] + 1) * chunk_size, reader.size - offset)
    data = reader.read(offset, length)
    if len(data) != length:
        raise OSError(f"short read at {offset}: {len(data)} of {length} bytes")
    view = memoryview(data)
    return [view[(i - run[0]) * chunk_size:(i - run[0] + 1) * chunk_size] for i in run]


def _pipelined(work: Callable[[list[int]], T], runs: list[list[int]], workers: int,
               on_result: Callable[[T], None]) -> None:
    """Run `work` over runs on a thread pool, at most 2 × workers runs in flight, results
    handed over in order."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dpflow-io") as pool:
        pending: deque[Future[T]] = deque()
        k = 0
        try:
            while k < len(runs) or pending:
                while k < len(runs) and len(pending) < workers * 2:
                    pending.append(pool.submit(work, runs[k]))
                    k += 1
                on_result(pending.popleft().result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def backup_disk(
    reader: RangeReader,
    store: ChunkStoreProtocol,
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
    is always a full map: a synthetic full. Consecutive chunks are read by one range
    request (READ_SPAN), then hashed, compressed and stored one by one.
    """
    stats = CopyStats()
    n = (reader.size + chunk_size - 1) // chunk_size
    todo = list(range(n)) if only is None else only
    chunks: list[str | None] = list(base) if base is not None else [None] * n
    if len(chunks) != n:
        raise ValueError(f"base map has {len(chunks)} chunks, the disk {n}")

    zeros = _ZeroIds(store)

    def work(run: list[int]) -> list[tuple[int, str | None, int, int]]:
        out: list[tuple[int, str | None, int, int]] = []
        for index, piece in zip(run, _read_run(reader, run, chunk_size), strict=True):
            cid = store.chunk_id(piece)
            n = len(piece)
            if zeros.is_zero(cid, n):
                out.append((index, None, n, 0))
            else:
                out.append((index, cid, n, store.put(cid, piece)))
        return out

    def take(results: list[tuple[int, str | None, int, int]]) -> None:
        for index, cid, length, added in results:
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

    try:
        runs = runs_of(todo, max(1, READ_SPAN // chunk_size), max_gap=MAX_GAP // chunk_size)
        _pipelined(work, runs, workers, take)
    except BaseException:
        store.abandon()
        raise
    store.flush()
    return chunks, stats


def restore_blocks(
    store: ChunkStoreProtocol, disk: DiskManifest, *, workers: int,
    progress: Progress | None = None,
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
    reader: RangeReader, disk: DiskManifest, id_of: Callable[[bytes | memoryview], str], *,
    workers: int,
    progress: Progress | None = None,
) -> list[int]:
    """Read a written disk back and return the indexes of chunks that differ from the manifest."""
    if reader.size < disk.capacity_bytes:
        return list(range(len(disk.chunks)))
    cs = disk.chunk_size
    bad: list[int] = []

    def work(run: list[int]) -> list[int]:
        wrong = []
        for index, piece in zip(run, _read_run(reader, run, cs), strict=True):
            want = disk.chunks[index]
            ok = piece == _zero(len(piece)) if want is None else id_of(piece) == want
            if not ok:
                wrong.append(index)
            if progress:
                progress(len(piece))
        return wrong

    runs = runs_of(list(range(len(disk.chunks))), max(1, READ_SPAN // cs))
    _pipelined(work, runs, workers, bad.extend)
    return bad

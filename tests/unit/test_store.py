"""Store v1 and the data pipeline on real bytes: dedup, zeros, corruption, bounded reads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dpflow.errors import UserError
from dpflow.store import ChunkStore, CorruptChunk, DiskManifest, VersionManifest
from dpflow.store.chunks import chunk_id
from dpflow.store.manifest import read_manifest, write_manifest
from dpflow.store.memory import MemoryChunkStore
from dpflow.store.packs import pack_path, read_trailer
from dpflow.store.pipeline import StreamWriter, backup_disk, restore_blocks, verify_disk

CS = 64 * 1024


class BytesDisk:
    """A disk held in memory, counting concurrent reads (the pipeline must bound them)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self.data[offset:offset + length]
        finally:
            with self._lock:
                self.in_flight -= 1


def mixed_disk(quarter: int, tail: int) -> bytes:
    """Random, text-like, zero and the same random again, then an odd-sized tail."""
    rnd = os.urandom(quarter)
    text = (b"log line: all systems nominal\n" * (quarter // 30 + 1))[:quarter]
    return rnd + text + bytes(quarter) + rnd + os.urandom(tail)


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "store").init()


def test_round_trip_dedup_and_zeros(store: ChunkStore) -> None:
    data = mixed_disk(8 * CS, 12345)  # not a multiple of the chunk size
    chunks, stats = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=3)
    assert stats.bytes_read == len(data)
    assert stats.chunks_zero == 8
    # the random quarter appears twice: its second copy is deduplicated
    assert stats.chunks_reused == 8
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    assert b"".join(restore_blocks(store, disk, workers=2)) == data
    # a second backup of the same bytes adds nothing
    _, again = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=2)
    assert again.bytes_added == 0


def test_pipeline_memory_is_bounded(store: ChunkStore) -> None:
    """Bytes held by the copy at its peak stay under 2 × workers read spans, whatever the
    disk size (here 4× that bound); reads never exceed the worker count."""
    import tracemalloc

    from dpflow.store.pipeline import READ_SPAN

    workers = 2
    bound = 2 * workers * READ_SPAN
    disk = BytesDisk(os.urandom(4 * bound))
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        backup_disk(disk, store, chunk_size=CS, workers=workers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < bound, f"{(peak - base) >> 20} MiB held at the peak"  # ~9 MiB
    assert disk.max_in_flight <= workers


def _flip_byte_of(store: ChunkStore, cid: str) -> None:
    pack, offset, length = store.index.lookup(cid)
    path = pack_path(store.packs_dir, pack)
    with open(path, "r+b") as f:
        f.seek(offset + length - 1)
        b = f.read(1)
        f.seek(offset + length - 1)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_chunk_is_detected_on_restore(store: ChunkStore) -> None:
    data = os.urandom(4 * CS)
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=2)
    _flip_byte_of(store, chunks[2])
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    with pytest.raises(CorruptChunk):
        b"".join(restore_blocks(store, disk, workers=2))
    with pytest.raises(CorruptChunk, match="missing"):
        store.get("00" * 32)


def test_pack_trailer_matches_index(store: ChunkStore) -> None:
    chunks, _ = backup_disk(BytesDisk(os.urandom(6 * CS)), store, chunk_size=CS, workers=2)
    from_trailers = {c for p in store.packs_dir.rglob("*.pack") for c, _, _ in read_trailer(p)}
    assert from_trailers == set(chunks) == store.all_chunk_ids()
    assert list(store.tmp_dir.iterdir()) == []


def test_failed_copy_leaves_no_open_pack(store: ChunkStore) -> None:
    class Failing(BytesDisk):
        def read(self, offset: int, length: int) -> bytes:
            if offset + length > 5 * CS:
                raise OSError("disk gone")
            return super().read(offset, length)

    with pytest.raises(OSError):
        backup_disk(Failing(os.urandom(8 * CS)), store, chunk_size=CS, workers=2)
    assert list(store.tmp_dir.iterdir()) == []


def test_encrypted_store(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = ChunkStore(tmp_path / "enc", key=key).init()
    text = b"the same plaintext in two stores " * 4000
    cid = store.chunk_id(text)
    assert cid != ChunkStore(tmp_path / "plain").init().chunk_id(text)  # keyed ids
    store.put(cid, text)
    store.flush()
    assert store.get(cid) == text
    raw = b"".join(p.read_bytes() for p in store.packs_dir.rglob("*.pack"))
    assert b"the same plaintext" not in raw  # compressed and sealed
    _flip_byte_of(store, cid)
    with pytest.raises(CorruptChunk, match="authentication"):
        store.get(cid)
    with pytest.raises(UserError, match="wrong key"):
        ChunkStore(tmp_path / "enc", key=os.urandom(32)).init()
    with pytest.raises(UserError, match="is encrypted"):
        ChunkStore(tmp_path / "enc").init()


def test_verify_names_the_differing_chunks(store: ChunkStore) -> None:
    data = bytearray(os.urandom(8 * CS))
    chunks, _ = backup_disk(BytesDisk(bytes(data)), store, chunk_size=CS, workers=2)
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    assert verify_disk(BytesDisk(bytes(data)), disk, store.chunk_id, workers=2) == []
    data[5 * CS + 7] ^= 1
    assert verify_disk(BytesDisk(bytes(data)), disk, store.chunk_id, workers=2) == [5]


def test_manifest_round_trip_and_no_temp_left(store: ChunkStore) -> None:
    from datetime import UTC, datetime

    m = VersionManifest(version_id="v1", object_name="vm", created=datetime.now(UTC),
                        quiesced=True, vm={"name": "vm"},
                        disks=[DiskManifest(key=1, label="d", capacity_bytes=CS, chunk_size=CS,
                                            chunks=[None])])
    write_manifest(store, m)
    assert read_manifest(store, "v1") == m
    assert list(store.tmp_dir.iterdir()) == []


def test_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "precious.txt").write_text("not a store")
    with pytest.raises(UserError, match="not a dpflow store"):
        ChunkStore(tmp_path / "x").init()


def test_runs_join_small_gaps_but_not_large_ones() -> None:
    from dpflow.store.pipeline import runs_of

    assert runs_of([0, 1, 2, 5, 6, 20], max_len=64, max_gap=2) == [[0, 1, 2, 5, 6], [20]]
    assert runs_of(list(range(10)), max_len=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert runs_of([0, 3], max_len=3, max_gap=5) == [[0], [3]]  # span limit holds


def test_incremental_copy_with_gaps_is_exact(store: ChunkStore) -> None:
    data = bytearray(os.urandom(32 * CS))
    base, _ = backup_disk(BytesDisk(bytes(data)), store, chunk_size=CS, workers=2)
    changed = [1, 3, 4, 9, 30]
    for i in changed:
        data[i * CS:(i + 1) * CS] = os.urandom(CS)
    chunks, stats = backup_disk(BytesDisk(bytes(data)), store, chunk_size=CS, workers=2,
                                only=changed, base=base)
    assert stats.bytes_read == len(changed) * CS
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    assert b"".join(restore_blocks(store, disk, workers=2)) == bytes(data)


def test_close_releases_every_file_descriptor(tmp_path: Path) -> None:
    def open_fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    before = open_fds()
    store = ChunkStore(tmp_path / "s", pack_target=3 * CS).init()
    data = os.urandom(16 * CS)
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=3)
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    assert b"".join(restore_blocks(store, disk, workers=3)) == data  # packs and SQLite open
    store.put(store.chunk_id(b"pending"), b"pending")  # an open temporary pack too
    assert open_fds() - before
    store.close()
    assert open_fds() - before == set()
    assert list(store.tmp_dir.iterdir()) == []


def test_pipeline_runs_over_the_memory_twin() -> None:
    twin = MemoryChunkStore()
    data = mixed_disk(4 * CS, 777)
    chunks, stats = backup_disk(BytesDisk(data), twin, chunk_size=CS, workers=2)
    assert stats.chunks_zero == 4 and stats.chunks_reused == 4
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    assert b"".join(restore_blocks(twin, disk, workers=2)) == data


class CountingTwin(MemoryChunkStore):
    """The memory twin, counting puts in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.max_in_flight = 0
        self._count = threading.Lock()

    def put(self, cid: str, data: bytes) -> int:
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            threading.Event().wait(0.001)  # long enough for puts to pile up if unbounded
            return super().put(cid, data)
        finally:
            with self._count:
                self.in_flight -= 1


def test_a_stream_gets_the_chunks_its_bytes_get_as_a_disk(store: ChunkStore) -> None:
    data = mixed_disk(6 * CS, 4321)
    as_disk, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=2)
    w = StreamWriter(store, CS, workers=2)
    # pieces of awkward sizes: the cut is at file offsets, not at piece boundaries
    pieces = [data[i:i + 50_001] for i in range(0, len(data), 50_001)]
    digest, as_stream, n = w.write(iter(pieces), len(data))
    w.commit()
    assert as_stream == as_disk and n == len(data)
    assert digest == chunk_id(data)
    assert w.stats.chunks_zero == 6 and w.stats.bytes_added == 0  # all stored by the disk copy
    disk = DiskManifest(key=1, label="f", capacity_bytes=n, chunk_size=CS, chunks=as_stream)
    assert b"".join(restore_blocks(store, disk, workers=2)) == data


def test_stream_writer_bounds_puts_in_flight_and_abandons_on_failure() -> None:
    twin = CountingTwin()
    w = StreamWriter(twin, CS, workers=2)
    data = os.urandom(40 * CS)
    _, chunks, _ = w.write(iter([data]), len(data))
    w.commit()
    assert 1 < twin.max_in_flight <= 2 * 2
    assert all(twin.get(c) == data[i * CS:(i + 1) * CS] for i, c in enumerate(chunks))

    w = StreamWriter(twin, CS, workers=2)
    more = os.urandom(8 * CS)
    with pytest.raises(OSError, match="size says"):
        w.write(iter([more]), len(more) + 1)  # the file was shorter than its size
    w.abandon()
    assert not any(twin.has(twin.chunk_id(more[i:i + CS])) for i in range(0, len(more), CS))


def test_reads_across_more_packs_than_stay_open_are_exact(tmp_path: Path) -> None:
    from dpflow.store.chunks import MAX_OPEN_PACKS

    store = ChunkStore(tmp_path / "s", pack_target=CS).init()  # one chunk per pack
    data = os.urandom((MAX_OPEN_PACKS + 40) * CS)
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=4)
    disk = DiskManifest(key=1, label="d", capacity_bytes=len(data), chunk_size=CS, chunks=chunks)
    for _ in range(2):  # descriptors are evicted and reopened while 8 threads read
        assert b"".join(restore_blocks(store, disk, workers=8)) == data
    assert len(store._fds) <= MAX_OPEN_PACKS
    store.close()

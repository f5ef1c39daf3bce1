"""One conformance suite for the chunk store contract (dpflow/store/protocol.py).

Run over the disk store (packs + SQLite, plain and encrypted) and over the in-memory
twin (plain and encrypted). A `Rig` opens store objects on one storage: a second object
is what another process, or the next run after a crash, would see. Any other
implementation gets a new `rig` param.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpflow.errors import PermanentError
from dpflow.store import ChunkStore, CorruptChunk
from dpflow.store.chunks import chunk_id
from dpflow.store.memory import MemoryChunkStore, MemoryMedium
from dpflow.store.packs import pack_path
from dpflow.store.protocol import ChunkStoreProtocol, StoreClosed

KEY = bytes(range(32))


@dataclass
class Rig:
    open: Callable[[], ChunkStoreProtocol]  # a new store object on the same storage
    damage: Callable[[str], None]  # flip a stored byte of a durable chunk
    lose: Callable[[str], None]  # the stored bytes of a durable chunk vanish


def _disk_rig(root: Path, key: bytes | None, opened: list[ChunkStoreProtocol]) -> Rig:
    def open_() -> ChunkStoreProtocol:
        # tiny packs: a few chunks fill one, so sealing mid-put is exercised too
        s = ChunkStore(root, key=key, pack_target=40_000).init()
        opened.append(s)
        return s

    def where(cid: str) -> tuple[Path, int, int]:
        s = ChunkStore(root, key=key).init()
        try:
            loc = s.index.lookup(cid)
            assert loc is not None
            return pack_path(s.packs_dir, loc[0]), loc[1], loc[2]
        finally:
            s.close()

    def damage(cid: str) -> None:
        path, offset, length = where(cid)
        with open(path, "r+b") as f:
            f.seek(offset + length - 1)
            b = f.read(1)
            f.seek(offset + length - 1)
            f.write(bytes([b[0] ^ 0xFF]))

    def lose(cid: str) -> None:
        where(cid)[0].unlink()

    return Rig(open_, damage, lose)


def _memory_rig(key: bytes | None, opened: list[ChunkStoreProtocol]) -> Rig:
    medium = MemoryMedium()

    def open_() -> ChunkStoreProtocol:
        s = MemoryChunkStore(medium, key=key)
        opened.append(s)
        return s

    return Rig(open_, medium.damage, medium.lose)


@pytest.fixture(params=["disk", "disk-encrypted", "memory", "memory-encrypted"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    key = KEY if request.param.endswith("encrypted") else None
    opened: list[ChunkStoreProtocol] = []
    if request.param.startswith("disk"):
        yield _disk_rig(tmp_path / "store", key, opened)
    else:
        yield _memory_rig(key, opened)
    for s in opened:
        s.close()


def chunk(seed: int, size: int = 10_000) -> bytes:
    """Distinct, half-compressible bytes for each seed."""
    head = seed.to_bytes(8, "little") * (size // 16)
    return head + os.urandom(size - len(head))


def test_both_implementations_keep_the_protocol(rig: Rig) -> None:
    assert isinstance(rig.open(), ChunkStoreProtocol)


def test_ids_are_a_pure_function_of_the_bytes(rig: Rig) -> None:
    a, b = rig.open(), rig.open()
    data = chunk(1)
    assert a.chunk_id(data) == b.chunk_id(data) == a.chunk_id(bytes(data))
    assert a.chunk_id(data) != a.chunk_id(chunk(2))
    assert (a.chunk_id(data) != chunk_id(data)) == a.encrypted


def test_put_flush_get_round_trip_is_exact(rig: Rig) -> None:
    s = rig.open()
    blobs = [chunk(i, 1 + i * 3_001) for i in range(12)]  # several packs' worth, odd sizes
    ids = [s.chunk_id(b) for b in blobs]
    for cid, b in zip(ids, blobs, strict=True):
        assert s.put(cid, b) > 0
    s.flush()
    assert [s.get(cid) for cid in ids] == blobs
    assert s.all_chunk_ids() >= set(ids)


def test_put_is_idempotent_and_counts_once(rig: Rig) -> None:
    s = rig.open()
    data = chunk(3)
    cid = s.chunk_id(data)
    assert s.put(cid, data) > 0
    assert s.put(cid, data) == 0  # pending
    s.flush()
    assert s.put(cid, data) == 0  # durable
    assert rig.open().put(cid, data) == 0  # durable, seen by another store object


def test_each_chunk_is_added_once_across_threads(rig: Rig) -> None:
    s = rig.open()
    blobs = [chunk(i, 4_000) for i in range(40)]
    added: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [s.put(s.chunk_id(b), b) for b in blobs]
        with lock:
            added.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for n in added if n > 0) == len(blobs)
    s.flush()
    assert all(s.get(s.chunk_id(b)) == b for b in blobs)


def test_pending_chunks_are_visible_only_to_their_own_store_object(rig: Rig) -> None:
    writer, other = rig.open(), rig.open()
    data = chunk(4)
    cid = writer.chunk_id(data)
    assert not writer.has(cid)
    writer.put(cid, data)
    assert writer.has(cid)  # no need to put it again
    assert not other.has(cid)
    assert cid not in other.all_chunk_ids()
    with pytest.raises(CorruptChunk):
        writer.get(cid)  # pending is not readable, even by its writer
    writer.flush()
    assert other.has(cid)
    assert other.get(cid) == data


def test_unflushed_chunks_do_not_survive_a_crash(rig: Rig) -> None:
    dying = rig.open()
    kept, lost = chunk(5), chunk(6)
    dying.put(dying.chunk_id(kept), kept)
    dying.flush()
    dying.put(dying.chunk_id(lost), lost)
    # the process dies here: no flush, no abandon, no close
    after = rig.open()
    assert after.get(after.chunk_id(kept)) == kept
    assert not after.has(after.chunk_id(lost))
    assert after.put(after.chunk_id(lost), lost) > 0  # stored again, not assumed present


def test_abandon_drops_pending_and_keeps_durable(rig: Rig) -> None:
    s = rig.open()
    kept, dropped = chunk(7), chunk(8)
    s.put(s.chunk_id(kept), kept)
    s.flush()
    s.put(s.chunk_id(dropped), dropped)
    s.abandon()
    assert not s.has(s.chunk_id(dropped))
    with pytest.raises(CorruptChunk):
        s.get(s.chunk_id(dropped))
    s.flush()  # nothing pending: abandoned chunks do not come back
    assert not rig.open().has(s.chunk_id(dropped))
    assert s.get(s.chunk_id(kept)) == kept
    assert s.put(s.chunk_id(dropped), dropped) > 0


def test_a_wrong_id_is_refused_and_nothing_is_stored(rig: Rig) -> None:
    s = rig.open()
    data = chunk(9)
    wrong = s.chunk_id(chunk(10))
    with pytest.raises(ValueError, match="not the id"):
        s.put(wrong, data)
    assert not s.has(wrong)
    s.flush()
    assert wrong not in s.all_chunk_ids()


def test_unknown_damaged_or_lost_chunks_raise_corrupt_never_wrong_bytes(rig: Rig) -> None:
    s = rig.open()
    with pytest.raises(CorruptChunk):
        s.get("0" * 64)
    a, b = chunk(11), chunk(12)
    s.put(s.chunk_id(a), a)
    s.flush()
    s.put(s.chunk_id(b), b)  # a separate pack on disk
    s.flush()
    rig.damage(s.chunk_id(a))
    rig.lose(s.chunk_id(b))
    reader = rig.open()
    for cid in (s.chunk_id(a), s.chunk_id(b)):
        with pytest.raises(CorruptChunk) as info:
            reader.get(cid)
        assert isinstance(info.value, PermanentError)  # retrying will not help
        assert cid in str(info.value)


def test_close_abandons_pending_and_refuses_further_use(rig: Rig) -> None:
    s = rig.open()
    data = chunk(13)
    cid = s.chunk_id(data)
    s.put(cid, data)
    s.close()
    s.close()  # idempotent
    s.abandon()
    assert not rig.open().has(cid)
    for call in (lambda: s.put(cid, data), lambda: s.has(cid), lambda: s.get(cid), s.flush,
                 s.all_chunk_ids):
        with pytest.raises(StoreClosed):
            call()

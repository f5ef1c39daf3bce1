"""A version published over FUSE: read lazily from the store, written to an overlay, the
store never touched (real store, real FUSE mount, no Prefect, no vCenter)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dpflow.store import ChunkStore, DiskManifest
from dpflow.store.pipeline import backup_disk
from tests.unit.test_store import CS, BytesDisk

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def tree_digest(root: Path) -> str:
    """Packs and the store's own file (the SQLite index is compared by its entries)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".sqlite" and "sqlite-" not in p.name:
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def _mount(ops, mount: Path) -> threading.Thread:
    from mfusepy import FUSE

    t = threading.Thread(target=FUSE, args=(ops, str(mount)),
                         kwargs={"foreground": True, "nothreads": True, "direct_io": True},
                         daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not os.path.ismount(mount):
        assert time.monotonic() < deadline, "the mount never came up"
        time.sleep(0.02)
    return t


def _unmount(mount: Path, t: threading.Thread) -> None:
    subprocess.run(["fusermount3", "-u", str(mount)], check=False)
    t.join(10)


@pytest.fixture
def published(tmp_path: Path):
    from dpflow.published import PublishedVersion

    data = os.urandom(5 * CS) + bytes(3 * CS) + os.urandom(CS // 2)
    store = ChunkStore(tmp_path / "store", key=b"k" * 32).init()
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=2)
    store.flush()
    disk = DiskManifest(key=2000, label="Hard disk 1", capacity_bytes=len(data), chunk_size=CS,
                        chunks=chunks)
    before = tree_digest(tmp_path / "store"), sorted(store.index.entries())
    mount, overlay = tmp_path / "mnt", tmp_path / "overlay"
    mount.mkdir()
    ops = PublishedVersion(store, [disk], "vm1", overlay)
    t = _mount(ops, mount)
    try:
        yield mount, data, ops
    finally:
        _unmount(mount, t)
        after = tree_digest(tmp_path / "store"), sorted(store.index.entries())
        assert after == before  # the store was never written
        store.close()


def test_reads_are_lazy_and_writes_stay_in_the_overlay(published):
    mount, data, ops = published
    flat = mount / "vm1" / "disk0-flat.vmdk"
    disk = ops.disks["/vm1/disk0-flat.vmdk"]
    assert flat.stat().st_size == len(data)
    assert sorted(os.listdir(mount / "vm1")) == ["disk0-flat.vmdk", "disk0.vmdk"]
    assert (f'RW {len(data) // 512} VMFS "disk0-flat.vmdk"'.encode()
            in (mount / "vm1" / "disk0.vmdk").read_bytes())
    with open(flat, "rb") as f:
        f.seek(CS + 100)
        assert f.read(1000) == data[CS + 100:CS + 1100]
    assert disk.image.chunks_fetched == 1  # one chunk read, not the disk
    with open(flat, "r+b") as f:
        f.seek(2 * CS - 10)
        f.write(b"\xee" * 20)  # across a chunk boundary
    assert disk.dirty == {1, 2}
    want = bytearray(data)
    want[2 * CS - 10:2 * CS + 10] = b"\xee" * 20
    assert flat.read_bytes() == bytes(want)
    fd = os.open(flat, os.O_RDWR)
    try:
        with pytest.raises(OSError):  # a disk does not grow
            os.pwrite(fd, b"x" * 10, len(data) - 5)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        flat.unlink()
    (mount / "vm1" / "vm1.lck").write_text("lock")  # other files: in the overlay directory
    assert (mount / "vm1" / "vm1.lck").read_text() == "lock"


def test_the_overlay_survives_a_restart_and_a_lost_store_is_an_io_error_told(tmp_path):
    """A server started again on the same overlay serves the writes made before (the chunk
    map is on disk); a read the store cannot answer is EIO to the guest, told once."""
    from dpflow.publish_health import StoreWatch, read_health
    from dpflow.published import PublishedVersion

    data = os.urandom(4 * CS)
    store = ChunkStore(tmp_path / "store").init()
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=1)
    store.flush()
    disk = DiskManifest(key=2000, label="Hard disk 1", capacity_bytes=len(data), chunk_size=CS,
                        chunks=chunks)
    mount, overlay = tmp_path / "mnt", tmp_path / "overlay"
    mount.mkdir()
    flat = mount / "vm1" / "disk0-flat.vmdk"
    t = _mount(PublishedVersion(store, [disk], "vm1", overlay), mount)
    with open(flat, "r+b") as f:
        f.seek(CS + 7)
        f.write(b"written before the restart")
        os.fsync(f.fileno())
    _unmount(mount, t)
    store.close()

    store = ChunkStore(tmp_path / "store").init(create=False)  # a new server, same overlay
    watch = StoreWatch(tmp_path / "store", overlay, "vm1")
    ops = PublishedVersion(store, [disk], "vm1", overlay, watch.read_error)
    t = _mount(ops, mount)
    try:
        want = bytearray(data)
        want[CS + 7:CS + 33] = b"written before the restart"
        with open(flat, "rb") as f:  # chunk 1, from the overlay: the store is not read
            f.seek(CS)
            assert f.read(CS) == bytes(want[CS:2 * CS])
        assert ops.disks["/vm1/disk0-flat.vmdk"].image.chunks_fetched == 0
        (tmp_path / "store" / "packs").rename(tmp_path / "packs.away")  # the store is lost
        fd = os.open(flat, os.O_RDONLY)
        try:
            for _ in range(2):
                with pytest.raises(OSError) as exc:
                    os.pread(fd, 100, 3 * CS)  # never read before: from the store
                assert exc.value.errno == errno.EIO
            assert os.pread(fd, 26, CS + 7) == b"written before the restart"  # overlay
        finally:
            os.close(fd)
        health = read_health(overlay)
        assert health["reachable"] is False and health["read_errors"] == 2
        assert "reading disk0 at offset" in str(health["error"])
        (tmp_path / "packs.away").rename(tmp_path / "store" / "packs")
        watch.probe()
        assert read_health(overlay)["reachable"] is True
        with open(flat, "rb") as f:
            f.seek(3 * CS)
            assert f.read(100) == data[3 * CS:3 * CS + 100]
    finally:
        _unmount(mount, t)
        store.close()

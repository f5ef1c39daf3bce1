"""A version published over FUSE: read lazily from the store, written to an overlay, the
store never touched (real store, real FUSE mount, no Prefect, no vCenter)."""

from __future__ import annotations

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


@pytest.fixture
def published(tmp_path: Path):
    from mfusepy import FUSE

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
    t = threading.Thread(target=FUSE, args=(ops, str(mount)),
                         kwargs={"foreground": True, "nothreads": True, "direct_io": True},
                         daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not os.path.ismount(mount):
        assert time.monotonic() < deadline, "the mount never came up"
        time.sleep(0.02)
    try:
        yield mount, data, ops
    finally:
        subprocess.run(["fusermount3", "-u", str(mount)], check=False)
        t.join(10)
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

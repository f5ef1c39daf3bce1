"""The guest file-system reader, name escaping, patterns and the safe restore writer, on
real images made with mkfs.ext4 -d, mkntfs + ntfscp and sfdisk (no simulator)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dpflow.errors import TransientError, UserError
from dpflow.guestfs import ImageDisk, RangeFile, SafeTarget, UnsafePath, discover, escape_name
from dpflow.guestfs.select import Pattern, Selection
from dpflow.store import ChunkStore, DiskManifest
from simulators.guest_fs_images import (
    MiB,
    ext4_from_tree,
    ntfs_with_files,
    partitioned_disk,
    write_tree,
)


class FileDisk:
    def __init__(self, path: Path, fail_after: int | None = None) -> None:
        self.fd, self.calls, self.fail_after = os.open(path, os.O_RDONLY), 0, fail_after
        self.size = path.stat().st_size

    def read(self, offset: int, length: int) -> bytes:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise TransientError("datastore went away")
        return os.pread(self.fd, length, offset)


FILES = {"etc/hostname": b"guest\n", "data/big.bin": os.urandom(2 * MiB + 7), "e": b""}


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("disks")
    ext4_from_tree(d / "ext4.img", 8 * MiB, lambda r: write_tree(r, FILES, 1_500_000_000))
    ntfs_with_files(d / "ntfs.img", 8 * MiB, {"a.txt": b"a" * 5000,
                                              "big.bin": os.urandom(MiB + 3)})
    partitioned_disk(d / "mbr.img", 20 * MiB, "mbr", [(d / "ext4.img", "linux"),
                                                      (d / "ntfs.img", "ntfs")])
    partitioned_disk(d / "gpt.img", 20 * MiB, "gpt", [(d / "ntfs.img", "ntfs"),
                                                      (d / "ext4.img", "linux")])
    return {"dir": d, "ext4": d / "ext4.img", "mbr": d / "mbr.img", "gpt": d / "gpt.img"}


def volumes(path: Path, **kw):
    disk = FileDisk(path, **kw)
    return discover(RangeFile(disk, disk.size), disk.size, 0)


def test_names_are_escaped_to_one_harmless_component():
    assert escape_name(".") == "%2E" and escape_name("..") == "%2E%2E"
    assert escape_name("a/b") == "a%2Fb" and escape_name("a\\b") == "a%5Cb"
    assert escape_name("a\x00b") == "a%00b" and escape_name("100%") == "100%25"
    assert escape_name("caf\udce9") == "caf%E9"  # a byte that is not UTF-8
    assert escape_name("Report 2024.docx") == "Report 2024.docx"


def test_patterns():
    p = Pattern.parse("d0p1:/etc")
    assert p.matches("d0p1", "/etc") and p.matches("d0p1", "/etc/x/y")
    assert not p.matches("d0p2", "/etc") and not p.matches("d0p1", "/etcetera")
    assert Pattern.parse("*.log").matches("d1", "/var/log/a.log")
    sel = Selection(["/home/u/big.bin"])
    assert sel("d0", "/home", True) and sel("d0", "/home/u", True)
    assert not sel("d0", "/etc", True) and not sel("d0", "/home/u/other", False)
    sel = Selection(None, ["*/cache"])
    assert not sel("d0", "/var/cache", True) and sel("d0", "/var/log", True)


@pytest.mark.parametrize("layout", ["mbr", "gpt"])
def test_discover_and_read_both_file_systems(disks, layout):
    found = volumes(disks[layout])
    kinds = sorted((r.fs_type or "") for r, _ in found)
    assert kinds == ["ext4", "ntfs"]
    for report, vol in found:
        entries = {e.path: e for e in vol.walk()}
        if report.fs_type == "ext4":
            e = entries["/data/big.bin"]
            assert vol.open(e).read() == FILES["data/big.bin"]
            assert e.mtime_ns == 1_500_000_000 * 10**9 and e.mode == 0o644
            assert entries["/e"].size == 0
            assert vol.lookup(("etc", "hostname")).size == len(FILES["etc/hostname"])
        else:
            assert vol.open(entries["/a.txt"]).read() == b"a" * 5000
            assert not any(p.startswith("/$") for p in entries)  # metadata files left out


@pytest.mark.parametrize("layout", ["mbr", "gpt"])
def test_extents_read_the_same_bytes_as_the_file_system_streams(disks, layout):
    disk = FileDisk(disks[layout])
    mapped = 0
    for _, vol in discover(RangeFile(disk, disk.size), disk.size, 0):
        for e in vol.walk():
            if e.kind != "file":
                continue
            ext = vol.extents(e)
            if ext is None:
                continue
            mapped += 1
            data = b"".join(bytes(n) if s is None else disk.read(s, n) for s, n in ext)
            assert data == vol.open(e).read(), e.path
    assert mapped >= 4  # big.bin and a.txt on NTFS, the ext4 files with extents


def test_whole_disk_blank_and_junk_are_reported(disks, tmp_path):
    (report, vol), = volumes(disks["ext4"])
    assert report.name == "d0" and report.fs_type == "ext4" and vol is not None
    blank = tmp_path / "blank"
    blank.write_bytes(bytes(MiB))
    (report, vol), = volumes(blank)
    assert vol is None and report.error == "blank disk"
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(MiB))
    (report, vol), = volumes(junk)
    assert vol is None and report.error


def test_damaged_file_systems_are_reported_per_volume(disks, tmp_path):
    data = bytearray(disks["mbr"].read_bytes())
    sb = 1 * MiB + 1024  # the first partition's ext4 superblock
    bad = bytearray(data)
    bad[sb + 40:sb + 44] = bytes(4)  # inodes per group: 0
    (tmp_path / "sb.img").write_bytes(bytes(bad))
    by = {r.name: (r, v) for r, v in volumes(tmp_path / "sb.img")}
    assert by["d0p1"][1] is None and by["d0p1"][0].error.startswith("damaged:")
    assert by["d0p2"][0].fs_type == "ntfs"  # the other volume is still read

    bad = bytearray(data)
    bad[1 * MiB + 4096:1 * MiB + 8192] = os.urandom(4096)  # group descriptors
    (tmp_path / "gdt.img").write_bytes(bytes(bad))
    by = {r.name: (r, v) for r, v in volumes(tmp_path / "gdt.img")}
    vol = by["d0p1"][1]
    assert list(vol.walk()) == [] and vol.problems  # walked, reported, not raised


def test_reader_failure_is_the_sessions_not_a_damaged_volume(disks):
    with pytest.raises(TransientError):
        for _, vol in volumes(disks["mbr"], fail_after=3):
            if vol is not None:
                for e in vol.walk():
                    if e.kind == "file":
                        vol.open(e).read()


def test_image_disk_reads_lazily_across_chunks(tmp_path):
    store = ChunkStore(tmp_path / "s").init()
    cs = 64 << 10
    data = os.urandom(3 * cs) + bytes(cs) + os.urandom(cs // 2)
    ids: list[str | None] = []
    for at in range(0, len(data), cs):
        piece = data[at:at + cs]
        if piece.count(0) == len(piece):
            ids.append(None)
            continue
        cid = store.chunk_id(piece)
        store.put(cid, piece)
        ids.append(cid)
    store.flush()
    dm = DiskManifest(key=0, label="d", capacity_bytes=len(data), chunk_size=cs, chunks=ids)
    img = ImageDisk(store, dm, cache_chunks=2)
    assert img.read(cs - 10, 20) == data[cs - 10:cs + 10]
    assert img.chunks_fetched == 2
    assert img.read(3 * cs, cs) == bytes(cs) and img.chunks_fetched == 2  # zeros: free
    f = RangeFile(img, len(data), block=4096, cache_blocks=4)
    f.seek(len(data) - 100)
    assert f.read() == data[-100:]


def test_safe_target_never_writes_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    root = tmp_path / "t"
    root.mkdir()
    os.symlink(outside, root / "dir")
    os.symlink(outside / "victim", root / "file")
    with SafeTarget(root) as t:
        with pytest.raises(UnsafePath):
            t.write_file(("dir", "x"), [b"evil"], 0o644, None, "overwrite")
        assert t.write_file(("file",), [b"new"], 0o600, 10**18, "overwrite") == "overwritten"
        assert t.symlink(("l1",), "/etc/passwd", "skip") == "written"  # verbatim, inert
        assert t.symlink(("a", "l2"), "../../x", "skip") == "written"
        assert t.symlink(("a", "l3"), "../ok", "skip") == "written"
        assert t.symlink(("a", "l4"), "", "skip").startswith("refused")
        with pytest.raises(UnsafePath):  # a restored link is never followed either
            t.write_file(("l1", "x"), [b"evil"], None, None, "overwrite")
        assert t.symlink(("dir",), str(outside), "overwrite") == "overwritten"
        with pytest.raises(UnsafePath):
            t.write_file(("..", "x"), [b"evil"], None, None, "skip")
        assert t.write_file(("file",), [b"again"], None, None, "rename") == \
            "renamed:file.restored-1"
        assert t.write_file(("file",), [b"again"], None, None, "skip") == "skipped"
    assert (outside / "victim").read_bytes() == b"keep"
    assert list(outside.iterdir()) == [outside / "victim"]
    f = root / "file"
    assert not f.is_symlink() and f.read_bytes() == b"new"
    assert f.stat().st_mode & 0o777 == 0o600 and f.stat().st_mtime_ns == 10**18


def test_safe_target_refuses_an_unusable_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError):
        SafeTarget(tmp_path / "f" / "sub")

"""File-level restore fidelity on real images (mkfs.ext4 -d, mkntfs + ntfscp), read by the
real guest file-system reader and written by the real SafeTarget: overlong names, hard
links, symlinks (absolute ones too), symlink times, holes, forged entries, a full target.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dpflow.errors import TransientError
from dpflow.guestfs import RangeFile, SafeTarget, discover
from dpflow.guestfs.restore import FileRestore, Restorer, TargetFailed, restore_volume
from dpflow.guestfs.target import fit_name
from dpflow.store.chunks import CorruptChunk
from simulators.guest_fs_images import (
    MiB,
    ext4_from_tree,
    ntfs_with_files,
    partitioned_disk,
    patch_name,
    write_tree,
)
from tests.small_fs import MOUNT, run_on_small_fs
from tests.unit.test_guestfs import FileDisk

T0 = 1_600_000_000
LONG_BYTES = b"\xff" * 255  # a name that is not UTF-8 at all: escaped to 765 bytes
LONG_BACKSLASH = "\\" * 255  # escaped to '%5C' x 255
LONG_EURO = "€" * 255  # an NTFS name of 255 UTF-16 units: 765 bytes in UTF-8


def restore_image(image: Path, target: Path, conflict: str = "skip") -> FileRestore:
    disk = FileDisk(image)
    with SafeTarget(target) as t:
        r = Restorer(t, conflict)
        for report, vol in discover(RangeFile(disk, disk.size), disk.size, 0):
            if vol is None:
                r.out.failed.append(f"{report.name}: {report.error}")
                continue
            restore_volume(r, vol)
        r.finish()
    return r.out


def all_names(root: Path) -> list[bytes]:
    out = []
    for _dirpath, dirs, files in os.walk(os.fsencode(root)):
        out += dirs + files
    return out


def test_overlong_names_are_shortened_listed_and_never_abort(tmp_path):
    def stage(root: Path) -> None:
        write_tree(root, {"ok.txt": b"ok", LONG_BACKSLASH: b"backslashes",
                          f"{LONG_BACKSLASH[:250]}/inner.txt": b"inner"}, mtime=T0)
        with open(os.path.join(os.fsencode(root), LONG_BYTES), "wb") as f:
            f.write(b"not utf-8")
    ext = tmp_path / "ext4.img"
    ext4_from_tree(ext, 8 * MiB, stage)
    ntfs = tmp_path / "ntfs.img"
    ntfs_with_files(ntfs, 8 * MiB, {LONG_EURO: b"euro", LONG_EURO[:200] + ".txt": b"e2"})
    disk = tmp_path / "disk.img"
    partitioned_disk(disk, 24 * MiB, "gpt", [(ext, "linux"), (ntfs, "ntfs")])

    out = restore_image(disk, tmp_path / "t")
    assert out.failed == [] and out.refused == [], out
    assert out.files == 6, out.totals()
    names = all_names(tmp_path / "t")
    assert max(len(n) for n in names) <= 255
    assert not [n for n in names if n.startswith(b".dpflow-")], "temporary files left"
    renamed = "\n".join(out.renamed)
    for orig in ("%5C" * 255, "%FF" * 255, LONG_EURO, LONG_EURO[:200] + ".txt",
                 "%5C" * 250):
        assert f"/{orig} -> {fit_name(orig)} (name longer than 255" in renamed, orig
    got = {p.name: p for p in (tmp_path / "t").rglob("*") if p.is_file()}
    assert got[fit_name("%5C" * 255)].read_bytes() == b"backslashes"
    assert got[fit_name("%FF" * 255)].read_bytes() == b"not utf-8"
    assert got[fit_name(LONG_EURO)].read_bytes() == b"euro"
    short = fit_name(LONG_EURO[:200] + ".txt")
    assert short.endswith(".txt") and got[short].read_bytes() == b"e2"
    assert got["inner.txt"].parent.name == fit_name("%5C" * 250)
    # deterministic: a second run finds the same names (and skips them all)
    again = restore_image(disk, tmp_path / "t")
    assert again.files == 0 and len(again.skipped) == 6 and again.failed == []


def test_fit_name_keeps_escapes_whole_and_is_stable():
    for name in ("%5C" * 255, "a%UD800" * 60, "é" * 200 + ".tar.gz", "x" * 300):
        short = fit_name(name)
        assert len(os.fsencode(short)) <= 255 and fit_name(name) == short != name
        head = short.split("~")[0]
        assert name.startswith(head) and len(os.fsencode(head)) > 200
        assert "%" not in re.sub(r"%U[0-9A-F]{4}|%[0-9A-F]{2}", "", head), head
    assert fit_name("é" * 200 + ".tar.gz").endswith(".gz")
    assert fit_name("x" * 255) == "x" * 255


def fidelity_stage(outside: Path):
    def stage(root: Path) -> None:
        write_tree(root, {"a/data.bin": b"linked data", "keep.txt": b"keep"}, mtime=T0)
        os.link(root / "a/data.bin", root / "hard-1.bin")
        os.makedirs(root / "b")
        os.link(root / "a/data.bin", root / "b/hard-2.bin")
        os.symlink("/etc/passwd", root / "abs-link")
        os.symlink(f"../../..{outside}", root / "a/escape-link")
        os.symlink(str(outside), root / "outside-dir")
        for link in ("abs-link", "a/escape-link", "outside-dir"):
            os.utime(root / link, ns=((T0 + 7) * 10**9, (T0 + 7) * 10**9), follow_symlinks=False)
        with open(root / "sparse.img", "wb") as f:
            f.write(b"head")
            f.seek(6 * MiB)
            f.write(b"tail")
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    return stage


def test_links_symlinks_times_and_holes_restored_as_they_were(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    img = tmp_path / "ext4.img"
    ext4_from_tree(img, 16 * MiB, fidelity_stage(outside))
    t = tmp_path / "t"
    out = restore_image(img, t)
    v = t / "d0"
    a, h1, h2 = (os.stat(v / p) for p in ("a/data.bin", "hard-1.bin", "b/hard-2.bin"))
    assert a.st_ino == h1.st_ino == h2.st_ino and a.st_nlink == 3
    assert (v / "b/hard-2.bin").read_bytes() == b"linked data"
    assert out.files == 3 and out.hard_links == 2, out.totals()  # data.bin, keep, sparse
    assert os.readlink(v / "abs-link") == "/etc/passwd"
    assert os.readlink(v / "a/escape-link") == f"../../..{outside}"
    assert os.readlink(v / "outside-dir") == str(outside)
    for link in ("abs-link", "a/escape-link", "outside-dir"):
        assert os.lstat(v / link).st_mtime_ns == (T0 + 7) * 10**9, link
    assert out.symlinks == 3
    sp = os.stat(v / "sparse.img")
    assert sp.st_size == 6 * MiB + 4 and sp.st_blocks * 512 < 1 * MiB, sp
    data = (v / "sparse.img").read_bytes()
    assert data[:4] == b"head" and data[-4:] == b"tail" and data.count(0) == len(data) - 8
    assert any("d0/null: refused: device not created" in r for r in out.refused), out.refused
    # a second restore over the first, overwriting: the restored links are replaced,
    # never written through
    out2 = restore_image(img, t, conflict="overwrite")
    assert out2.failed == [] and list(outside.iterdir()) == []
    assert os.readlink(v / "outside-dir") == str(outside)


def test_forged_dot_entries_are_refused_and_reported(tmp_path):
    img = tmp_path / "ext4.img"
    ext4_from_tree(img, 8 * MiB, lambda r: write_tree(r, {"dir/XX": b"dotdot",
                                                          "dir/Y": b"dot", "ok": b"ok"}))
    assert patch_name(img, "XX", "..", utf16=False) >= 1
    data = bytearray(img.read_bytes())
    i = data.find(b"\x01\x01Y")  # name_len=1, file_type=1 (file), name
    assert i > 6
    data[i + 2] = ord(".")
    img.write_bytes(bytes(data))
    out = restore_image(img, tmp_path / "t")
    forged = [f for f in out.refused if "forged directory entry" in f]
    assert len(forged) == 2 and all("d0:/dir" in f for f in forged), out.failed
    assert sorted(p.name for p in (tmp_path / "t/d0/dir").iterdir()) == []
    assert (tmp_path / "t/d0/ok").read_bytes() == b"ok"


def in_small_tmpfs(script: str, size: str) -> dict:
    """`script` run by this Python with a real tmpfs of `size` at $TARGET."""
    p = run_on_small_fs([sys.executable, "-c", textwrap.dedent(script)], size,
                        env=dict(os.environ, TARGET=MOUNT), cwd=str(Path(__file__).parents[2]))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_full_target_stops_with_one_line_and_no_temporary_file():
    got = in_small_tmpfs("""
        import json, os
        from dpflow.guestfs import SafeTarget
        from dpflow.guestfs.restore import Restorer, TargetFailed
        with SafeTarget(os.environ["TARGET"]) as t:
            r = Restorer(t, "skip")
            msg = None
            try:
                for i in range(20):
                    r.restore(("v", f"f{i}"), "file", blocks=lambda: [os.urandom(300_000)])
            except TargetFailed as exc:
                msg = str(exc)
        names = os.listdir(os.path.join(os.environ["TARGET"], "v"))
        print(json.dumps({"msg": msg, "names": names, "files": r.out.files}))
    """, "1m")
    msg, names = got["msg"], got["names"]
    assert msg is not None and "\n" not in msg, got
    assert "is full (No space left on device)" in msg and "writing v/f" in msg, msg
    assert f"{got['files']} object(s) restored ({got['files']} files" in msg, msg
    assert 1 <= got["files"] < 20 and sorted(names) == sorted(f"f{i}" for i in
                                                              range(got["files"]))
    assert isinstance(TargetFailed("x"), Exception)


def test_odd_target_errors_fail_one_object_not_the_restore(tmp_path):
    with SafeTarget(tmp_path) as t:
        r = Restorer(t, "skip")
        r.restore(("v", "l"), "symlink", link="x" * 5000)  # ENAMETOOLONG for a link target
        r.restore(("v", "f"), "file", blocks=lambda: iter([b"ok"]))

        def broken():
            yield b"part"
            raise ValueError("damaged extent")
        r.restore(("v", "g"), "file", blocks=broken)

        def corrupt():
            yield b"part"
            raise CorruptChunk("chunk 00ff does not match its hash (damaged on disk)")
        r.restore(("v", "h"), "file", blocks=corrupt)
        r.restore(("v", "i"), "file", blocks=lambda: iter([b"after"]))
        with pytest.raises(TransientError):  # the store unreachable: the session's failure
            r.restore(("v", "j"), "file", blocks=lambda: (_ for _ in ()).throw(
                TransientError("store share went away")))
        r.finish()
    out = r.out
    assert out.files == 2 and len(out.failed) == 3, out
    assert "v/l: not written" in out.failed[0] and "damaged extent" in out.failed[1]
    assert "v/h: not restored: damaged in the store: chunk 00ff" in out.failed[2]
    assert sorted(os.listdir(tmp_path / "v")) == ["f", "i"]


def test_relinking_a_name_of_the_same_file_leaves_no_temporary_name(tmp_path):
    with SafeTarget(tmp_path) as t:
        assert t.write_file(("v", "a"), [b"x"], None, None, "skip") == "written"
        assert t.link(("v", "a"), ("v", "b"), "skip") == "written"
        assert t.link(("v", "a"), ("v", "b"), "overwrite") == "overwritten"
    assert sorted(os.listdir(tmp_path / "v")) == ["a", "b"]
    assert os.stat(tmp_path / "v/a").st_ino == os.stat(tmp_path / "v/b").st_ino


def test_holes_never_change_the_bytes(tmp_path):
    """Seeded mixes of zero runs and data at awkward sizes around the hole granularity."""
    from dpflow.guestfs.target import HOLE

    rng = random.Random(20261203)
    with SafeTarget(tmp_path) as t:
        for case in range(150):
            blocks = []
            for _ in range(rng.randrange(0, 6)):
                b = bytearray(rng.choice([0, 1, HOLE - 1, HOLE, HOLE + 1, 3 * HOLE + 5, MiB]))
                for _ in range(rng.randrange(0, 4) if b else 0):
                    at = rng.randrange(len(b))
                    n = min(rng.randrange(1, 2 * HOLE), len(b) - at)
                    b[at:at + n] = rng.randbytes(n)
                blocks.append(bytes(b))
            t.write_file(("v", f"f{case}"), blocks, None, None, "skip")
            assert (tmp_path / "v" / f"f{case}").read_bytes() == b"".join(blocks), case


def test_a_target_with_no_room_at_all_is_one_line_before_anything():
    got = in_small_tmpfs("""
        import json, os
        from dpflow.errors import UserError
        from dpflow.guestfs import SafeTarget
        with open(os.path.join(os.environ["TARGET"], "filler"), "wb") as f:
            try:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
            except OSError:
                pass
        for i in range(100000):  # the last free inodes and blocks, if any
            try:
                os.mkdir(os.path.join(os.environ["TARGET"], f"d{i}"))
            except OSError:
                break
        try:
            SafeTarget(os.environ["TARGET"]).close()
            print(json.dumps({"msg": None}))
        except UserError as exc:
            print(json.dumps({"msg": str(exc)}))
    """, "256k,nr_inodes=32")
    assert got["msg"] and "not writable (No space left on device)" in got["msg"], got


def test_temporary_files_of_an_interrupted_restore_are_removed_next_time(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    dead, busy, link = (v / f".dpflow-{c * 16}.tmp" for c in "abc")
    for p in (dead, busy):
        p.write_bytes(b"half a file")
    os.symlink("x", link)
    (v / ".dpflow-not-ours.tmp").write_bytes(b"kept")

    def restore(name: str) -> FileRestore:
        with SafeTarget(tmp_path) as t:
            r = Restorer(t, "skip")
            r.restore(("v", name), "file", blocks=lambda: [b"data"])
            r.finish()
        return r.out

    out = restore("first")  # all of them just made: none is stale yet
    assert out.leftovers == [] and len(list(v.iterdir())) == 5
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live restore writing it
        real = time.time
        time.time = lambda: real() + 3600  # ctime cannot be set back: the clock moves on
        try:
            out = restore("second")
        finally:
            time.time = real
    assert sorted(p.name for p in v.iterdir()) == sorted(
        [busy.name, ".dpflow-not-ours.tmp", "first", "second"])
    assert sorted(out.leftovers) == [f"v/{dead.name}", f"v/{link.name}"]
    assert "2 temporary file(s) of an interrupted restore removed" in out.totals()


def test_a_damaged_or_lost_chunk_fails_its_file_only(tmp_path):
    """Catalogued files read back from a store whose medium lost or damaged chunks."""
    from types import SimpleNamespace

    import blake3

    from dpflow.guestfs.restore import catalogued_blocks
    from dpflow.store.memory import MemoryChunkStore, MemoryMedium

    medium = MemoryMedium()
    store = MemoryChunkStore(medium)
    rows = []
    for name in ("good", "damaged", "lost", "wrong-digest"):
        data = name.encode() * 1000
        cid = store.chunk_id(data)
        store.put(cid, data)
        digest = blake3.blake3(b"other" if name == "wrong-digest" else data).hexdigest()
        rows.append(SimpleNamespace(path=f"/{name}", chunks=json.dumps([cid]),
                                    chunk_size=1 << 20, size=len(data), digest=digest))
    store.flush()
    medium.damage(json.loads(rows[1].chunks)[0])
    medium.lose(json.loads(rows[2].chunks)[0])
    with SafeTarget(tmp_path) as t:
        r = Restorer(t, "skip")
        for row in rows:
            r.restore(("v", row.path[1:]), "file",
                      blocks=lambda row=row: catalogued_blocks(store, row))
        r.finish()
    assert sorted(os.listdir(tmp_path / "v")) == ["good"]
    assert r.out.files == 1 and len(r.out.failed) == 3, r.out.failed
    assert all("damaged in the store" in f for f in r.out.failed), r.out.failed

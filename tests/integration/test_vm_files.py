"""File-level backup and restore against vcsim: real NTFS and ext4 images (mkntfs/ntfscp,
mkfs.ext4 -d) in MBR and GPT disks, read through the real pyVmomi driver over HTTPS.

Restored files are compared byte for byte with what the guest had, with their mtimes and
modes; hostile images must not get anything written outside the restore directory.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dpflow.environment import environment
from dpflow.errors import DpflowError, UserError
from dpflow.guestfs.target import fit_name
from simulators.guest_fs_images import (
    MiB,
    add_ntfs_files,
    ext4_from_tree,
    ntfs_with_files,
    partitioned_disk,
    patch_name,
    write_tree,
)
from tests.small_fs import MOUNT, run_on_small_fs

pytestmark = pytest.mark.usefixtures("prefect_server")
_names = itertools.count()
T0 = 1_600_000_000  # fixed guest mtimes

EXT_FILES = {
    "etc/hostname": b"linux-guest\n",
    "etc/app/app.conf": b"threads=4\nlog=/var/log/app.log\n",
    "var/log/app.log": b"".join(b"%06d INFO started\n" % i for i in range(20000)),
    "home/u/big.bin": os.urandom(3 * MiB + 123),
    "home/u/sparse.img": bytes(2 * MiB) + b"tail",
    "empty.txt": b"",
}
NTFS_FILES = {"readme.txt": b"hello from windows\r\n", "data.bin": os.urandom(700_000),
              "Report 2024.docx": os.urandom(40_000)}


def ext_stage(root: Path) -> None:
    write_tree(root, EXT_FILES, mtime=T0)
    os.chmod(root / "etc/app/app.conf", 0o600)
    os.chmod(root / "home/u/big.bin", 0o751)
    os.symlink("../hostname", root / "etc/app/hostname-link")


def new_vm(vcsim, name: str, disks: list[Path]) -> str:
    vm = f"{name}{next(_names)}-{os.getpid()}"
    vcsim.create_vm(vm, [(d.stat().st_size + MiB - 1) // MiB * MiB for d in disks])
    for i, d in enumerate(disks):
        vcsim.seed_disk(vm, i, d)
    return vm


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("guestfs")
    ext4_from_tree(d / "ext4.img", 24 * MiB, ext_stage)
    ntfs_with_files(d / "ntfs.img", 16 * MiB, NTFS_FILES)
    offs = partitioned_disk(d / "mbr.img", 48 * MiB, "mbr",
                            [(d / "ext4.img", "linux"), (d / "ntfs.img", "ntfs")])
    offs2 = partitioned_disk(d / "gpt.img", 48 * MiB, "gpt",
                             [(d / "ntfs.img", "ntfs"), (d / "ext4.img", "linux")])
    (d / "offsets").write_text(" ".join(map(str, offs + offs2)))
    return {"dir": d, "ext4": d / "ext4.img", "ntfs": d / "ntfs.img", "mbr": d / "mbr.img",
            "gpt": d / "gpt.img"}


@pytest.fixture(autouse=True)
def _no_faults(vcsim):
    vcsim.clear_faults()
    yield
    vcsim.clear_faults()


def tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*")}


def check_ext(root: Path) -> None:
    for rel, data in EXT_FILES.items():
        p = root / rel
        assert p.read_bytes() == data, rel
        assert p.stat().st_mtime == T0, rel
    assert stat.S_IMODE((root / "etc/app/app.conf").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "home/u/big.bin").stat().st_mode) == 0o751
    link = root / "etc/app/hostname-link"
    assert link.is_symlink() and os.readlink(link) == "../hostname"


def test_full_backup_ntfs_ext4_mbr_gpt_then_restore_bit_for_bit(vcsim, dc_config, images,
                                                                 tmp_path):
    from flows.vm_files import backup_vm_files, restore_vm_files

    vm = new_vm(vcsim, "files", [images["mbr"], images["gpt"]])
    r = backup_vm_files(str(dc_config), vm)
    assert r.status == "completed" and r.snapshot_removed and vcsim.snapshot_count(vm) == 0
    fs = {v["name"]: v["fs_type"] for v in r.volumes}
    assert fs == {"d0p1": "ext4", "d0p2": "ntfs", "d1p1": "ntfs", "d1p2": "ext4"}, r.volumes
    assert r.problems == []
    assert r.files_read == 2 * (len(EXT_FILES) + len(NTFS_FILES))

    rows = environment(dc_config).catalog().files(r.version_id)
    by = {(x.volume, x.path): x for x in rows}
    conf = by[("d0p1", "/etc/app/app.conf")]
    assert (conf.kind, conf.size, conf.mode, conf.uid, conf.owner) == \
        ("file", len(EXT_FILES["etc/app/app.conf"]), 0o600, 0, "0:0")
    assert conf.mtime_ns == T0 * 10**9 and conf.digest
    assert by[("d1p2", "/etc/app/hostname-link")].target == "../hostname"
    assert by[("d0p2", "/readme.txt")].attributes is not None

    out = tmp_path / "restore"
    rr = restore_vm_files(str(dc_config), vm, str(out), ["*"])
    assert rr.refused == [] and rr.skipped == []
    for vol in ("d0p1", "d1p2"):
        check_ext(out / vol)
        sparse = (out / vol / "home/u/sparse.img").stat()
        assert sparse.st_blocks * 512 < 1 * MiB, "the 2 MiB of zeros were not left a hole"
    for vol in ("d0p2", "d1p1"):
        for name, data in NTFS_FILES.items():
            assert (out / vol / name).read_bytes() == data
    assert rr.bytes_written == 2 * (sum(map(len, EXT_FILES.values()))
                                    + sum(map(len, NTFS_FILES.values())))


def _rewrite_partition(vcsim, vm: str, disk: int, offset: int, image: Path) -> None:
    vcsim.guest_write(vm, disk, offset, image.read_bytes())


def debugfs(image: Path, *cmds: str) -> None:
    for c in cmds:
        subprocess.run(["debugfs", "-w", "-R", c, str(image)], check=True, capture_output=True)


def test_incremental_and_differential_read_only_changed_files(vcsim, dc_config, images,
                                                              tmp_path):
    from flows.vm_files import backup_vm_files, restore_vm_files

    ext = tmp_path / "ext4.img"
    ntfs = tmp_path / "ntfs.img"
    ext.write_bytes(images["ext4"].read_bytes())
    ntfs.write_bytes(images["ntfs"].read_bytes())
    offs = [int(x) for x in (images["dir"] / "offsets").read_text().split()]
    vm = new_vm(vcsim, "incr", [images["mbr"]])
    cfg = str(dc_config)

    with pytest.raises(UserError, match="no earlier full"):
        backup_vm_files(cfg, vm, level="incr")
    full = backup_vm_files(cfg, vm, level="full")

    # the guest changes one file on each file system and adds one
    src = tmp_path / "new"
    src.write_bytes(b"renamed-host\n")
    debugfs(ext, "rm /etc/hostname", f"write {src} /etc/hostname")
    src.write_bytes(b"a new log\n" * 1000)
    debugfs(ext, f"write {src} /var/log/new.log")
    add_ntfs_files(ntfs, {"readme.txt": b"changed by the guest\r\n", "new.txt": b"new\r\n"})
    _rewrite_partition(vcsim, vm, 0, offs[0], ext)
    _rewrite_partition(vcsim, vm, 0, offs[1], ntfs)

    inc = backup_vm_files(cfg, vm, level="incr")
    assert inc.level == "incr" and inc.base_version == full.version_id
    assert inc.files_read == 4, inc
    assert inc.files == full.files + 2

    add_ntfs_files(ntfs, {"data.bin": b"x" * 5000})
    _rewrite_partition(vcsim, vm, 0, offs[1], ntfs)
    inc2 = backup_vm_files(cfg, vm, level="incr")
    assert inc2.files_read == 1 and inc2.base_version == inc.version_id
    diff = backup_vm_files(cfg, vm, level="diff")
    assert diff.base_version == full.version_id and diff.files_read == 5
    rows = environment(dc_config).catalog().files(diff.version_id)
    changed = {r.path for r in rows if r.changed and r.kind == "file"}
    assert changed == {"/etc/hostname", "/var/log/new.log", "/readme.txt", "/new.txt",
                       "/data.bin"}

    # verify and prune count the file-level versions' chunks (they live in the catalog)
    from flows.maintenance import prune_media, verify_media

    assert verify_media(cfg, read_percent=100).ok
    prune_media(cfg, apply=True)

    # the latest incremental restores whole: unchanged files come from the full's chunks
    out = tmp_path / "r"
    restore_vm_files(cfg, vm, str(out), ["*"], version=inc2.version_id)
    assert (out / "d0p1/etc/hostname").read_bytes() == b"renamed-host\n"
    assert (out / "d0p1/home/u/big.bin").read_bytes() == EXT_FILES["home/u/big.bin"]
    assert (out / "d0p2/data.bin").read_bytes() == b"x" * 5000
    assert (out / "d0p2/Report 2024.docx").read_bytes() == NTFS_FILES["Report 2024.docx"]
    # and the full still gives the old bytes
    old = tmp_path / "old"
    restore_vm_files(cfg, vm, str(old), ["d0p2:/readme.txt"], version=full.version_id)
    assert (old / "d0p2/readme.txt").read_bytes() == NTFS_FILES["readme.txt"]
    assert not (old / "d0p1").exists()


def test_incr_without_full_runs_a_full_only_when_asked(vcsim, dc_config, images):
    from flows.vm_files import backup_vm_files

    vm = new_vm(vcsim, "promote", [images["gpt"]])
    r = backup_vm_files(str(dc_config), vm, level="diff", full_if_needed=True)
    assert r.level == "full" and r.base_version is None


def test_include_exclude_and_conflict_policies(vcsim, dc_config, images, tmp_path):
    from flows.vm_files import backup_vm_files, restore_vm_files

    vm = new_vm(vcsim, "sel", [images["mbr"]])
    cfg = str(dc_config)
    r = backup_vm_files(cfg, vm, include=["d0p1:/etc", "*.bin"], exclude=["*/data.bin"])
    paths = {(x.volume, x.path) for x in environment(dc_config).catalog().files(r.version_id)
             if x.kind == "file"}
    assert paths == {("d0p1", "/etc/hostname"), ("d0p1", "/etc/app/app.conf"),
                     ("d0p1", "/home/u/big.bin")}, paths

    out = tmp_path / "r"
    (out / "d0p1/etc").mkdir(parents=True)
    (out / "d0p1/etc/hostname").write_bytes(b"mine")
    a = restore_vm_files(cfg, vm, str(out), ["/etc/hostname"], conflict="skip")
    assert a.skipped == ["d0p1/etc/hostname"]
    assert (out / "d0p1/etc/hostname").read_bytes() == b"mine"
    b = restore_vm_files(cfg, vm, str(out), ["/etc/hostname"], conflict="rename")
    assert (out / "d0p1/etc/hostname.restored-1").read_bytes() == EXT_FILES["etc/hostname"]
    assert b.renamed and (out / "d0p1/etc/hostname").read_bytes() == b"mine"
    restore_vm_files(cfg, vm, str(out), ["/etc/hostname"], conflict="overwrite")
    assert (out / "d0p1/etc/hostname").read_bytes() == EXT_FILES["etc/hostname"]

    with pytest.raises(UserError, match="matches"):
        restore_vm_files(cfg, vm, str(out), ["/no/such/*"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not usable|not writable"):
        restore_vm_files(cfg, vm, str(blocker / "sub"), ["/etc/hostname"])
    with pytest.raises(UserError, match="conflict"):
        restore_vm_files(cfg, vm, str(out), ["/etc/hostname"], conflict="merge")
    with pytest.raises(UserError, match="unknown VM"):
        backup_vm_files(cfg, "no-such-vm")


def hostile_ext4(path: Path, outside: Path) -> None:
    def stage(root: Path) -> None:
        write_tree(root, {"ok.txt": b"fine", "dir/inner.txt": b"inner",
                          "dir/XX": b"dotdot", "dir/aXb": b"slash", "loop/keep": b"k"})
        os.symlink("/etc/passwd", root / "abs-link")
        os.symlink(f"../../..{outside}/pwned", root / "dir/escape-link")
        os.symlink("inner.txt", root / "dir/good-link")
        os.link(root / "ok.txt", root / "dir/hard.txt")
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mkfifo(root / "fifo")
        os.mkdir(root / "loop/Zq")  # becomes a second name of the root directory below
        for name in (b"\\" * 255, b"\xff" * 255):  # escaped, 765 bytes: too long as is
            with open(os.path.join(os.fsencode(root / "dir"), name), "wb") as f:
                f.write(b"long " + name[:1])
    ext4_from_tree(path, 8 * MiB, stage, block_size=1024)
    assert patch_name(path, "XX", "..", utf16=False) >= 1
    assert patch_name(path, "aXb", "a/b", utf16=False) >= 1
    # the entry 'Zq' in /loop made to point at inode 2 (the root): a directory hard link
    data = bytearray(path.read_bytes())
    i = data.find(b"\x02\x02Zq")  # name_len=2, file_type=2 (dir), name
    assert i > 6
    data[i - 6:i - 2] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_hostile_guest_file_systems_never_escape_the_target(vcsim, dc_config, tmp_path):
    from flows.vm_files import backup_vm_files, restore_vm_files

    outside = tmp_path / "outside"
    outside.mkdir()
    ext = tmp_path / "hostile-ext4.img"
    hostile_ext4(ext, outside)
    ntfs = tmp_path / "hostile-ntfs.img"
    ntfs_with_files(ntfs, 8 * MiB, {"AsB.txt": b"s", "AnB.txt": b"n", "QQ": b"d",
                                    "good.txt": b"good"})
    assert patch_name(ntfs, "AsB.txt", "A/B.txt", utf16=True) >= 1
    assert patch_name(ntfs, "AnB.txt", "A\x00B.txt", utf16=True) >= 1
    assert patch_name(ntfs, "QQ", "..", utf16=True) >= 1
    disk = tmp_path / "hostile.img"
    partitioned_disk(disk, 24 * MiB, "gpt", [(ext, "linux"), (ntfs, "ntfs")])
    vm = new_vm(vcsim, "hostile", [disk])
    r = backup_vm_files(str(dc_config), vm)
    # what was refused is reported as a problem: the version exists but the backup is partial
    assert r.status == "partial" and r.version_id and vcsim.snapshot_count(vm) == 0
    assert any("already seen" in p for p in r.problems), r.problems
    forged = [p for p in r.problems if "forged directory entry '..'" in p]
    assert {p.split(":")[0] + p.split(":")[1] for p in forged} == {"d0p1/dir", "d0p2/"}, \
        r.problems
    paths = {(x.volume, x.path) for x in environment(dc_config).catalog().files(r.version_id)}
    assert ("d0p1", "/dir/a%2Fb") in paths and ("d0p1", "/dir/%2E%2E") not in paths
    assert {("d0p2", "/A%2FB.txt"), ("d0p2", "/A%00B.txt")} <= paths
    assert ("d0p2", "/%2E%2E") not in paths

    target = tmp_path / "target"
    (target / "d0p1").mkdir(parents=True)
    os.symlink(outside, target / "d0p1" / "loop")  # planted: must not be written through
    rr = restore_vm_files(str(dc_config), vm, str(target), ["*"])
    assert list(outside.iterdir()) == []
    for p in target.rglob("*"):
        if p.is_symlink():
            continue
        assert p.resolve().is_relative_to(target.resolve()), p
    t = tree(target)
    assert (target / "d0p1/dir/a%2Fb").read_bytes() == b"slash"
    assert (target / "d0p2/A%2FB.txt").read_bytes() == b"s"
    assert (target / "d0p2/A%00B.txt").read_bytes() == b"n"
    assert (target / "d0p1/dir/hard.txt").read_bytes() == b"fine"
    assert os.stat(target / "d0p1/dir/hard.txt").st_ino == os.stat(target / "d0p1/ok.txt").st_ino
    assert os.readlink(target / "d0p1/dir/good-link") == "inner.txt"
    assert os.readlink(target / "d0p1/abs-link") == "/etc/passwd"  # verbatim, not followed
    assert os.readlink(target / "d0p1/dir/escape-link") == f"../../..{outside}/pwned"
    for bad in ("d0p1/null", "d0p1/fifo"):
        assert bad not in t, bad
    refused = "\n".join(rr.refused)
    assert "d0p1/null: refused: device" in refused and "d0p1/fifo: refused" in refused
    assert "d0p1/loop" in refused  # the planted symlink stopped that path
    renamed = "\n".join(rr.renamed)
    assert "d0p1/dir/a%2Fb (guest name 'a/b'" in renamed, renamed
    for escaped, first in (("%5C" * 255, b"\\"), ("%FF" * 255, b"\xff")):
        short = fit_name(escaped)
        assert (target / "d0p1/dir" / short).read_bytes() == b"long " + first
        assert f"d0p1/dir/{escaped} -> {short} (name longer than 255 bytes" in renamed
    assert rr.failed == [] and not list(target.rglob(".dpflow-*"))
    assert os.path.islink(target / "d0p1/loop")


def test_disk_read_failing_leaves_no_version_and_no_snapshot(vcsim, dc_config, images):
    from flows.vm_files import backup_vm_files

    vm = new_vm(vcsim, "fail", [images["mbr"]])
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="http", status=503, count=3)
    r = backup_vm_files(str(dc_config), vm)  # transient: retried, completes
    assert r.status == "completed" and r.files_read == len(EXT_FILES) + len(NTFS_FILES)
    vm = new_vm(vcsim, "fail", [images["mbr"]])
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="http", status=404, count=0)
    with pytest.raises(DpflowError):
        backup_vm_files(str(dc_config), vm)
    assert vcsim.snapshot_count(vm) == 0
    assert environment(dc_config).catalog().file_sets(vm) == []


def test_unknown_and_damaged_volumes_are_reported_not_fatal(vcsim, dc_config, images,
                                                            tmp_path):
    from flows.vm_files import backup_vm_files

    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(4 * MiB))
    broken = tmp_path / "broken-ntfs.img"
    ntfs_with_files(broken, 8 * MiB, {"x.txt": b"x"})
    data = bytearray(broken.read_bytes())
    mft = data.find(b"FILE0")
    data[mft:mft + 4 * 1024 * 16] = os.urandom(4 * 1024 * 16)  # $MFT records destroyed
    broken.write_bytes(bytes(data))
    disk = tmp_path / "mixed.img"
    partitioned_disk(disk, 48 * MiB, "mbr", [(images["ext4"], "linux"), (junk, "linux"),
                                             (broken, "ntfs")])
    vm = new_vm(vcsim, "damaged", [disk])
    r = backup_vm_files(str(dc_config), vm)
    assert r.status == "partial" and r.problems  # done, but not everything: never "green"
    session = environment(dc_config).catalog().get_session(r.session_id)
    assert session.status == "partial" and "problem" in session.message
    vols = {v["name"]: v for v in r.volumes}
    assert vols["d0p1"]["fs_type"] == "ext4"
    assert vols["d0p2"]["fs_type"] is None and "unknown" in vols["d0p2"]["error"]
    assert vols["d0p3"]["fs_type"] is None or any("d0p3" in p for p in r.problems)
    assert r.files_read == len(EXT_FILES)


def test_no_readable_file_system_fails_with_no_version(vcsim, dc_config, tmp_path):
    from flows.vm_files import backup_vm_files

    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(8 * MiB))
    disk = tmp_path / "junk-disk.img"
    partitioned_disk(disk, 16 * MiB, "mbr", [(junk, "linux")])
    vm = new_vm(vcsim, "junk", [disk])
    with pytest.raises(DpflowError, match="nothing was protected"):
        backup_vm_files(str(dc_config), vm)
    assert environment(dc_config).catalog().file_sets(vm) == []
    assert vcsim.snapshot_count(vm) == 0


def test_single_file_out_of_an_image_version(vcsim, dc_config, images, tmp_path):
    from flows.vm_files import restore_files_from_image
    from flows.vm_image import backup_vm_image

    big = tmp_path / "big.img"
    partitioned_disk(big, 256 * MiB, "gpt", [(images["ext4"], "linux"),
                                             (images["ntfs"], "ntfs")])
    with open(big, "r+b") as f:  # data the file restore must not need to read
        f.seek(64 * MiB)
        f.write(os.urandom(128 * MiB))
    vm = new_vm(vcsim, "image", [big])
    v = backup_vm_image(str(dc_config), vm)
    out = tmp_path / "r"
    r = restore_files_from_image(str(dc_config), vm, str(out), ["d0p1:/home/u/big.bin"],
                                 version=v.version_id)
    assert (out / "d0p1/home/u/big.bin").read_bytes() == EXT_FILES["home/u/big.bin"]
    assert (out / "d0p1/home/u/big.bin").stat().st_mtime == T0
    assert r.files == 1 and r.source_bytes_read < 0.05 * r.image_bytes, r
    r2 = restore_files_from_image(str(dc_config), vm, str(out), ["/readme.txt"])
    assert (out / "d0p2/readme.txt").read_bytes() == NTFS_FILES["readme.txt"]
    assert r2.files == 1
    with pytest.raises(UserError, match="matches"):
        restore_files_from_image(str(dc_config), vm, str(out), ["/nothing-here"])


def cli(*args: str) -> tuple[int, str]:
    """The CLI in its own process, as an administrator runs it."""
    import sys

    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, COLUMNS="200", PREFECT_API_URL=str(PREFECT_API_URL.value()))
    p = subprocess.run([sys.executable, "-c", "from dpflow_cli.main import app; app()", *args],
                       capture_output=True, text=True, env=env, timeout=300)
    return p.returncode, p.stdout + p.stderr


def one_line(code: int, out: str, words: str) -> None:
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in out, out


def test_cli_backup_find_restore_and_bad_input(vcsim, dc_config, images, tmp_path):
    vm = new_vm(vcsim, "cli", [images["mbr"]])
    c = str(dc_config)
    one_line(*cli("backup", "files", vm, "--level", "incr", "-c", c), "no earlier full")
    one_line(*cli("backup", "files", "no-such-vm", "-c", c), "unknown VM 'no-such-vm'")
    code, out = cli("backup", "files", vm, "-c", c)
    assert code == 0 and "full file backup" in out, out
    code, out = cli("find", vm, "*.conf", "-c", c)
    assert code == 0 and "/etc/app/app.conf" in out, out
    one_line(*cli("find", vm, "/nothing*", "-c", c), "matches")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line(*cli("restore", "files", vm, "/etc/hostname", "--to", str(blocker / "d"),
                  "-c", c), "not usable")
    store = dc_config.parent / "store"
    before = sorted(store.rglob("*"))
    one_line(*cli("restore", "files", vm, "/etc/hostname", "--to", str(store / "x"),
                  "-c", c), "inside store 'library'")
    assert sorted(store.rglob("*")) == before
    code, out = cli("restore", "files", vm, "/etc/hostname", "--to", str(tmp_path / "r"),
                    "-c", c)
    assert code == 0, out
    assert (tmp_path / "r/d0p1/etc/hostname").read_bytes() == EXT_FILES["etc/hostname"]
    totals = "1 object(s) restored (1 files, 0 hard links, 0 symlinks, 0 directories"
    assert f"totals: {totals}" in out, out
    assert totals in last_session(dc_config, "restore-files").message


def last_session(config: Path, kind: str):
    from sqlalchemy import select

    from dpflow.catalog import SessionRow

    with environment(config).catalog().session() as db:
        return db.scalars(select(SessionRow).where(SessionRow.kind == kind)
                          .order_by(SessionRow.started.desc())).first()


def test_cli_restore_to_a_full_disk_says_how_much_in_one_line(vcsim, dc_config, images):
    from flows.vm_files import backup_vm_files

    vm = new_vm(vcsim, "full", [images["mbr"]])
    backup_vm_files(str(dc_config), vm)
    env = dict(os.environ, COLUMNS="200")
    p = run_on_small_fs([sys.executable, "-m", "dpflow_cli", "restore", "files", vm, "*",
                         "--to", f"{MOUNT}/r", "-c", str(dc_config)], "2m", env=env)
    out = p.stdout + p.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in out, out
    assert "restore stopped: target" in out and "is full (No space left on device)" in out
    assert "object(s) restored" in out and "--conflict skip" in out
    s = last_session(dc_config, "restore-files")
    assert s.status == "failed" and "is full" in s.message, s.message


def test_in_guest_restore_needs_guest_credentials(dc_config, monkeypatch):
    from flows.vm_files import restore_vm_files_into_guest

    with pytest.raises(UserError, match="guest credentials missing"):
        restore_vm_files_into_guest(str(dc_config), "any-vm", "/restored", ["*"])
    monkeypatch.delenv("DPFLOW_TEST_GUEST_PW", raising=False)
    with pytest.raises(UserError, match="DPFLOW_TEST_GUEST_PW"):
        restore_vm_files_into_guest(str(dc_config), "any-vm", "/restored", ["*"],
                                    guest_user="root", guest_password_env="DPFLOW_TEST_GUEST_PW")


def test_restore_into_the_running_guest(vcsim, dc_config, images, tmp_path, monkeypatch):
    """Through the real pyVmomi guest-operations code; the simulator's guest file manager
    writes the upload into the VM's disk image, so a later backup sees it."""
    from flows.vm_files import backup_vm_files, restore_vm_files, restore_vm_files_into_guest

    user = getattr(vcsim, "guest_user", "root")
    password = getattr(vcsim, "guest_password", "dpflow-guest")
    vm = new_vm(vcsim, "guest", [images["ext4"]])
    from pyVim.task import WaitForTask

    WaitForTask(vcsim.vm(vm).PowerOnVM_Task())
    cfg = str(dc_config)
    backup_vm_files(cfg, vm)
    monkeypatch.setenv("DPFLOW_TEST_GUEST_PW", "wrong")
    with pytest.raises(UserError, match="InvalidGuestLogin"):
        restore_vm_files_into_guest(cfg, vm, "/restored", ["/etc/hostname"],
                                    guest_user=user, guest_password_env="DPFLOW_TEST_GUEST_PW")
    monkeypatch.setenv("DPFLOW_TEST_GUEST_PW", password)
    r = restore_vm_files_into_guest(cfg, vm, "/restored", ["/etc"], guest_user=user,
                                    guest_password_env="DPFLOW_TEST_GUEST_PW")
    assert r.files == 2
    again = restore_vm_files_into_guest(cfg, vm, "/restored", ["/etc/hostname"],
                                        guest_user=user,
                                        guest_password_env="DPFLOW_TEST_GUEST_PW",
                                        conflict="rename")
    assert again.renamed
    later = backup_vm_files(cfg, vm)
    out = tmp_path / "r"
    restore_vm_files(cfg, vm, str(out), ["/restored"], version=later.version_id)
    assert (out / "d0/restored/etc/hostname").read_bytes() == EXT_FILES["etc/hostname"]
    assert (out / "d0/restored/etc/app/app.conf").read_bytes() == EXT_FILES["etc/app/app.conf"]
    assert (out / "d0/restored/etc/hostname.restored-1").exists()

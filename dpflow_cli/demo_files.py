"""Demo of the file-level paths (issue 4), run inside the demo data centre.

A Windows-like VM (NTFS in a GPT disk) and a Linux VM (ext4 in an MBR disk) get a
file-level full backup; their guests then change files and an incremental reads only
those; one changed file is restored to a directory and compared; finally one file comes
back out of an ordinary image version, read lazily, with the share of the image it read.

    rows = run_files_demo(sim, config_path, workdir, console)

`sim` is a running simulators.vcsim.Vcsim, `config_path` the data-centre file pointing at
it, with a Prefect server already reachable; rows are (check, result, detail) for the
demo's report. Raises nothing on a failed check: the rows say 'FAILED'.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from simulators.guest_fs_images import (
    MiB,
    add_ntfs_files,
    ext4_from_tree,
    ntfs_with_files,
    partitioned_disk,
    write_tree,
)

WIN_VM, LINUX_VM = "win-files01", "linux-files01"


def _guest_content(seed: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    rng = random.Random(seed)
    linux = {"etc/hostname": b"linux-files01\n",
             "etc/app/app.conf": b"threads=8\nlisten=0.0.0.0:8080\n",
             "var/log/app.log": b"".join(b"%d INFO request served\n" % i for i in range(50_000)),
             "srv/data/orders.db": rng.randbytes(3 * MiB)}
    for i in range(40):
        linux[f"home/user{i % 4}/doc{i}.txt"] = f"document {i}\n".encode() * rng.randint(1, 500)
    win = {"boot.ini": b"[boot loader]\r\ntimeout=30\r\n",
           "Quarterly Report.docx": rng.randbytes(600_000),
           "payroll.xlsx": rng.randbytes(250_000),
           "notes.txt": b"remember the backup\r\n" * 100}
    return linux, win


def _ok(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def run_files_demo(sim: Any, config_path: str | Path, workdir: Path,
                   console: Any) -> list[tuple[str, str, str]]:
    from flows.vm_files import backup_vm_files, restore_files_from_image, restore_vm_files
    from flows.vm_image import backup_vm_image

    cfg = str(config_path)
    workdir = Path(workdir)
    rows: list[tuple[str, str, str]] = []
    linux, win = _guest_content(4)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t = Path(tmp)
        ext, ntfs = t / "ext4.img", t / "ntfs.img"
        ext4_from_tree(ext, 32 * MiB, lambda root: write_tree(root, linux, 1_700_000_000))
        ntfs_with_files(ntfs, 16 * MiB, win)
        (lin_off,) = partitioned_disk(t / "linux.img", 40 * MiB, "mbr", [(ext, "linux")])
        (win_off,) = partitioned_disk(t / "win.img", 24 * MiB, "gpt", [(ntfs, "ntfs")])
        for vm, img in ((LINUX_VM, t / "linux.img"), (WIN_VM, t / "win.img")):
            if not sim.vm_exists(vm):
                sim.create_vm(vm, [img.stat().st_size])
            sim.seed_disk(vm, 0, img)

        console.rule("file-level backup: NTFS (GPT) and ext4 (MBR) guests, no agent")
        fulls = {}
        for vm in (WIN_VM, LINUX_VM):
            r = backup_vm_files(cfg, vm, "full")
            fulls[vm] = r
            fs = ", ".join(f"{v['name']} {v['fs_type']}" for v in r.volumes)
            console.print(f"  {vm}: {r.status}, {r.files} objects ({fs}), {r.files_read} files "
                          f"read, {r.bytes_read / 1e6:.1f} MB, {r.seconds:.1f}s, snapshot "
                          f"removed: {sim.snapshot_count(vm) == 0}")
            rows.append((f"file backup {vm} (full)", _ok(r.status == "completed"),
                         f"{r.files} objects on {fs}, {r.bytes_read / 1e6:.1f} MB read"))

        console.rule("the guests change files; incremental backups read only those")
        src = t / "new"
        src.write_bytes(b"threads=16\nlisten=0.0.0.0:8443\n")
        subprocess.run(["debugfs", "-w", "-R", "rm /etc/app/app.conf", str(ext)], check=True,
                       capture_output=True)
        subprocess.run(["debugfs", "-w", "-R", f"write {src} /etc/app/app.conf", str(ext)],
                       check=True, capture_output=True)
        new_notes = b"the backup ran, and it was incremental\r\n" * 50
        add_ntfs_files(ntfs, {"notes.txt": new_notes, "new-invoice.pdf": os.urandom(90_000)})
        sim.guest_write(LINUX_VM, 0, lin_off, ext.read_bytes())
        sim.guest_write(WIN_VM, 0, win_off, ntfs.read_bytes())
        incs = {}
        for vm, expect in ((WIN_VM, 2), (LINUX_VM, 1)):
            r = backup_vm_files(cfg, vm, "incr")
            incs[vm] = r
            console.print(f"  {vm}: incr of {r.files} objects read {r.files_read} file(s) "
                          f"({r.bytes_read / 1e3:.0f} kB) in {r.seconds:.1f}s")
            rows.append((f"file backup {vm} (incr)", _ok(r.files_read == expect),
                         f"{r.files_read} of {r.files} read (expected {expect})"))

        console.rule("restore one changed file of each guest to a directory")
        out = workdir / "restored-files"
        ra = restore_vm_files(cfg, WIN_VM, str(out), ["/notes.txt"], conflict="overwrite")
        rb = restore_vm_files(cfg, LINUX_VM, str(out), ["/etc/app/app.conf"],
                             conflict="overwrite")
        same_win = (out / "d0p1/notes.txt").read_bytes() == new_notes
        same_lin = (out / "d0p1/etc/app/app.conf").read_bytes() == src.read_bytes()
        console.print(f"  {out}/d0p1/notes.txt and etc/app/app.conf: same bytes as the "
                      f"guests: {same_win and same_lin} ({ra.seconds + rb.seconds:.1f}s)")
        rows.append(("restore changed files to a directory", _ok(same_win and same_lin),
                     f"{ra.files + rb.files} files, compared byte for byte"))

        console.rule("one file straight out of an image version (no VM restore)")
        image = backup_vm_image(cfg, LINUX_VM)
        out2 = workdir / "restored-from-image"
        fr = restore_files_from_image(cfg, LINUX_VM, str(out2), ["/srv/data/orders.db"],
                                      image.version_id, conflict="overwrite")
        same = (out2 / "d0p1/srv/data/orders.db").read_bytes() == linux["srv/data/orders.db"]
        share = 100 * fr.source_bytes_read / max(1, fr.image_bytes)
        console.print(f"  /srv/data/orders.db from image version {image.version_id}: "
                      f"{fr.seconds:.2f}s, {fr.source_bytes_read / 1e6:.1f} MB read of a "
                      f"{fr.image_bytes / 1e6:.0f} MB image ({share:.1f} %), same bytes: {same}")
        rows.append(("one file out of an image version", _ok(same),
                     f"{fr.seconds:.2f}s, read {share:.1f} % of the image"))
    return rows

"""File-level benchmark: full and incremental guest-file backups, and one file out of an
image version, through the real flows against vcsim's HTTPS datastore.

The guest is an ext4 file system made by `mkfs.ext4 -d` (text-like and random files,
1 KiB - 4 MiB) in a GPT disk; the incremental follows a guest that rewrote ~2 % of the
files and added some (debugfs, in place). The image version is a `--image-gib` disk
whose first GiB holds the file system and whose rest is random (1/2) and zeros (1/2);
the one-file restore reports its time and the bytes it fetched from the store.

    uv run python bench/bench_files.py [--files 4000] [--image-gib 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulators.guest_fs_images import MiB, ext4_from_tree, partitioned_disk  # noqa: E402

GiB = 1 << 30


def guest_files(n: int, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        size = int(min(4 * MiB, max(1024, rng.lognormvariate(10.5, 1.6))))
        d = f"srv/d{i % 50:02d}/sub{i % 7}"
        if i % 2:
            line = b"%d INFO request served user=%d latency_ms=%d\n" % (
                i, rng.randint(1, 9999), rng.randint(1, 500))
            files[f"{d}/log{i}.txt"] = (line * (size // len(line) + 1))[:size]
        else:
            files[f"{d}/blob{i}.bin"] = rng.randbytes(size)
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--image-gib", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpflow-bench-files-"))
    os.environ["DPFLOW_HOME"] = str(work / "home")
    from dpflow.prefect_server import quiet_console

    quiet_console()
    from dpflow import prefect_server
    from dpflow_cli.demo import write_config
    from simulators.vcsim import Vcsim

    files = guest_files(args.files)
    data_bytes = sum(map(len, files.values()))
    fs_size = max(256 * MiB, (data_bytes * 13 // 10) // MiB * MiB)
    ext = work / "ext4.img"
    t0 = time.perf_counter()

    def stage(root: Path) -> None:
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    ext4_from_tree(ext, fs_size, stage)
    disk = work / "disk.img"
    disk_size = max(args.image_gib * GiB, fs_size + 64 * MiB)
    (offset,) = partitioned_disk(disk, disk_size, "gpt", [(ext, "linux")])
    rest = offset + fs_size + 2 * MiB
    rng = random.Random(1)
    with open(disk, "r+b") as f:  # the rest of the disk: half random, half zeros
        f.seek(rest)
        left = (disk_size - rest) // 2
        while left > 0:
            n = min(left, 64 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    print(f"guest: {len(files):,} files, {data_bytes / 1e6:,.0f} MB in a {fs_size >> 20} MiB "
          f"ext4, disk {disk_size / GiB:.1f} GiB (made in {time.perf_counter() - t0:.0f}s)")

    prefect_server.ensure_server()
    from flows.vm_files import backup_vm_files, restore_files_from_image
    from flows.vm_image import backup_vm_image

    out: dict[str, float] = {"files": len(files), "file_bytes": data_bytes,
                             "image_bytes": disk_size}
    with Vcsim(work_dir=work / "vcsim") as sim:
        sim.create_vm("bench", [disk_size])
        sim.seed_disk("bench", 0, disk)
        cfg = str(write_config(work, sim))
        backup_vm_files(cfg, "bench", "full", include=["/srv"])  # warm-up, other store path
        t0 = time.perf_counter()
        full = backup_vm_files(cfg, "bench", "full")
        out["full_s"] = time.perf_counter() - t0
        out["full_files_read"], out["full_bytes_read"] = full.files_read, full.bytes_read

        # the guest rewrites ~2 % of its files and adds 1 %, in place (debugfs)
        names = sorted(files)
        changed = names[:: 50]
        cmds, src = [], work / "new"
        src.mkdir()
        for i, rel in enumerate(changed):
            p = src / f"c{i}"
            p.write_bytes(os.urandom(len(files[rel])))
            cmds += [f"rm /{rel}", f"write {p} /{rel}"]
        for i in range(len(files) // 100):
            p = src / f"n{i}"
            p.write_bytes(os.urandom(64 << 10))
            cmds.append(f"write {p} /srv/d00/new{i}.bin")
        (work / "cmds").write_text("\n".join(cmds) + "\n")
        subprocess.run(["debugfs", "-w", "-f", str(work / "cmds"), str(ext)], check=True,
                       capture_output=True)
        with open(ext, "rb") as f:
            pos = 0
            while chunk := f.read(64 * MiB):
                sim.guest_write("bench", 0, offset + pos, chunk)
                pos += len(chunk)
        t0 = time.perf_counter()
        inc = backup_vm_files(cfg, "bench", "incr")
        out["incr_s"] = time.perf_counter() - t0
        out["incr_files"], out["incr_files_read"] = inc.files, inc.files_read
        out["incr_bytes_read"] = inc.bytes_read

        t0 = time.perf_counter()
        img = backup_vm_image(cfg, "bench")
        out["image_backup_s"] = time.perf_counter() - t0
        target = work / "restore"
        one = max((n for n in names if n.endswith(".bin") and n not in changed),
                  key=lambda n: len(files[n]))
        rs = []
        for attempt in range(3):
            t0 = time.perf_counter()
            r = restore_files_from_image(cfg, "bench", str(target / str(attempt)), [f"/{one}"],
                                         img.version_id)
            rs.append((time.perf_counter() - t0, r))
            got = (target / str(attempt) / "d0p1" / one).read_bytes()
            assert got == files[one], "restored file differs"
        out["one_file_bytes"] = len(files[one])
        out["one_file_restore_s_first"] = rs[0][0]
        out["one_file_restore_s_median"] = sorted(s for s, _ in rs)[1]
        out["one_file_store_bytes_read"] = rs[0][1].source_bytes_read
        out["one_file_read_fraction"] = rs[0][1].source_bytes_read / disk_size
    prefect_server.stop_server()

    print(f"full : {out['full_files_read']:,} files in {out['full_s']:.1f}s = "
          f"{out['full_files_read'] / out['full_s']:,.0f} files/s, "
          f"{out['full_bytes_read'] / out['full_s'] / 1e6:,.0f} MB/s")
    print(f"incr : {out['incr_files']:,} files walked, {out['incr_files_read']:,} read "
          f"({out['incr_bytes_read'] / 1e6:,.1f} MB) in {out['incr_s']:.1f}s = "
          f"{out['incr_files'] / out['incr_s']:,.0f} files/s walked")
    print(f"image: {disk_size / GiB:.1f} GiB version in {out['image_backup_s']:.1f}s; one "
          f"{out['one_file_bytes'] / 1e6:.1f} MB file out of it in "
          f"{out['one_file_restore_s_first']:.2f}s (median of 3: "
          f"{out['one_file_restore_s_median']:.2f}s), "
          f"{out['one_file_store_bytes_read'] / 1e6:.1f} MB read from the store = "
          f"{100 * out['one_file_read_fraction']:.2f} % of the image")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

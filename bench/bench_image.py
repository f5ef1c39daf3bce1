"""Image backup benchmark: dpflow through vcsim's HTTPS datastore vs restic on a local file.

Same bytes, same run. dpflow runs the real flow (snapshot, range reads over HTTPS,
blake3, zstd, chunk files, catalog); restic reads the local file. Prints a table and
ratios; --json FILE writes the figures.

    uv run python bench/bench_image.py [--size-mib 1024] [--json bench/results/image.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.disk_image import MiB, make_disk  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_restic(img: Path, work: Path) -> dict[str, float]:
    repo, target = work / "restic-repo", work / "restic-restore"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "restic-cache"))
    subprocess.run(["restic", "-q", "-r", str(repo), "init", "--repository-version", "2"],
                   env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(["restic", "-q", "-r", str(repo), "backup", "--compression", "auto",
                    str(img)], env=env, check=True, capture_output=True)
    backup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["restic", "-q", "-r", str(repo), "restore", "latest", "--target",
                    str(target)], env=env, check=True, capture_output=True)
    restore_s = time.perf_counter() - t0
    restored = next(p for p in target.rglob(img.name))
    from dpflow.demo import file_digest

    assert file_digest(restored) == file_digest(img), "restic restore differs"
    return {"backup_s": backup_s, "restore_s": restore_s, "repo_bytes": du(repo)}


def run_dpflow(img: Path, work: Path, size: int) -> dict[str, float]:
    os.environ["DPFLOW_HOME"] = str(work / "home")
    from dpflow.prefect_server import quiet_console

    quiet_console()
    from dpflow import prefect_server
    from dpflow.demo import file_digest, write_config
    from simulators.vcsim import Vcsim

    prefect_server.ensure_server()
    from flows.vm_image import backup_vm_image, restore_vm_image

    with Vcsim(work_dir=work / "vcsim") as sim:
        sim.create_vm("bench", [size])
        sim.seed_disk("bench", 0, img)
        cfg = str(write_config(work, sim))
        t0 = time.perf_counter()
        r = backup_vm_image(cfg, "bench")
        backup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        restore_vm_image(cfg, "bench", r.version_id, as_name="bench-restored")
        restore_s = time.perf_counter() - t0
        assert file_digest(sim.current_disk_path("bench-restored", 0)) == file_digest(img)
    prefect_server.stop_server()
    return {"backup_s": backup_s, "restore_s": restore_s, "repo_bytes": du(work / "store")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="dpflow-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        img = work / "disk.img"
        make_disk(img, size)
        subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        restic = run_restic(img, work)
        dp = run_dpflow(img, work, size)
    mb = size / 1e6
    rows = {
        "dpflow": dp, "restic": restic,
    }
    print(f"\nimage backup of a {args.size_mib} MiB mixed disk (35% zero, 35% text, 30% random)")
    print(f"{'tool':8} {'backup MB/s':>12} {'restore MB/s':>13} {'repo MB':>9}")
    for name, r in rows.items():
        print(f"{name:8} {mb / r['backup_s']:12.0f} {mb / r['restore_s']:13.0f} "
              f"{r['repo_bytes'] / 1e6:9.1f}")
    ratio_b = restic["backup_s"] / dp["backup_s"]
    ratio_r = restic["restore_s"] / dp["restore_s"]
    print(f"dpflow/restic: backup {ratio_b:.2f}x, restore {ratio_r:.2f}x, repository "
          f"{dp['repo_bytes'] / restic['repo_bytes']:.2f}x the size")
    print(f"peak RSS of this process (dpflow side): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size_bytes": size, **{k: v for k, v in rows.items()},
                                         "ratio_backup": ratio_b, "ratio_restore": ratio_r},
                                        indent=2))


if __name__ == "__main__":
    main()

"""Image backup benchmark (issue 3): dpflow through vcsim's HTTPS datastore vs restic and
borg on the same bytes in a local file, day 1 (full), day 2 (incremental) and restore.

One run, same bytes: a seeded mixed disk (bench/disk_image.py) and its next day.
dpflow runs its real flows (snapshot, CBT, range reads over HTTPS, blake3, zstd,
AES-GCM, packs, catalog) in its own process per operation, so every tool's peak RSS is
its own. Restores run after a write warm-up and twice (first, repeated); every restore is
checked against the source by digest. Prints a table and the issue's targets with
PASS/MISS; --json FILE writes every figure. See bench/README.md.

    uv run python bench/bench_image.py [--size-mib 4096] [--sparse-size-mib 32768]
                                       [--json bench/results/image.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.disk_image import (  # noqa: E402
    BLOCK,
    MiB,
    make_disk,
    make_next_day,
    make_sparse_disk,
)

SIDE = ROOT / "bench" / "_dpflow_side.py"


# --- measuring -----------------------------------------------------------------------

def timed(cmd: list[str], *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[float, int, str]:
    """Run `cmd` under /usr/bin/time: (wall seconds, peak RSS KiB, stdout)."""
    with tempfile.NamedTemporaryFile("r", dir="/var/tmp", prefix="dpflow-bench-rss-") as rf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rf.name, *cmd], env=env,
                           cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({p.returncode}):\n"
                               f"{p.stderr[-3000:]}")
        rss = int(rf.read().strip().splitlines()[-1])
    return wall, rss, p.stdout


def du(path: Path) -> int:
    """Apparent size of every file under `path` (what the repository holds)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def content_digest(path: Path) -> str:
    """Digest of a file's content that never reads it whole into memory and skips holes:
    size, then every non-zero 1 MiB block with its index (a hole and written zeros give
    the same digest, as they are the same content)."""
    h = hashlib.blake2b(digest_size=16)
    zero = bytes(MiB)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            i = data // MiB
            while i * MiB < hole:
                block = os.pread(fd, MiB, i * MiB)
                if block != zero[:len(block)]:
                    h.update(i.to_bytes(8, "little"))
                    h.update(block)
                i += 1
            off = i * MiB
    return h.hexdigest()


def warm_up(src: Path, work: Path, nbytes: int) -> float:
    """Write `nbytes` (copies of src) and fsync: the first GiBs written after a pause are
    slow for every tool; this takes that hit before the restores are timed."""
    t0 = time.perf_counter()
    out = work / "warmup.bin"
    left = nbytes
    with open(src, "rb") as inp, open(out, "wb") as f:
        while left > 0:
            block = inp.read(8 * MiB) or (inp.seek(0) or inp.read(8 * MiB))
            f.write(block[:left])
            left -= len(block[:left])
        f.flush()
        os.fsync(f.fileno())
    out.unlink()
    return time.perf_counter() - t0


# --- the tools -----------------------------------------------------------------------

class Restic:
    name = "restic"

    def __init__(self, work: Path) -> None:
        self.repo = work / "restic-repo"
        self.work = work
        self.env = dict(os.environ, RESTIC_PASSWORD="bench",
                        RESTIC_CACHE_DIR=str(work / "restic-cache"))
        timed(["restic", "-q", "-r", str(self.repo), "init", "--repository-version", "2"],
              env=self.env)

    def backup(self, img: Path) -> dict[str, Any]:
        wall, rss, _ = timed(["restic", "-q", "-r", str(self.repo), "backup",
                              "--compression", "auto", str(img)], env=self.env)
        return {"seconds": wall, "maxrss_kib": rss}

    def restore(self, img: Path, target: Path) -> tuple[dict[str, Any], Path]:
        wall, rss, _ = timed(["restic", "-q", "-r", str(self.repo), "restore", "latest",
                              "--target", str(target)], env=self.env)
        return {"seconds": wall, "maxrss_kib": rss}, target / img.relative_to("/")


class Borg:
    name = "borg"

    def __init__(self, work: Path) -> None:
        self.repo = work / "borg-repo"
        base = work / "borg-home"
        self.env = dict(os.environ, BORG_BASE_DIR=str(base),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.day = 0
        timed(["borg", "init", "-e", "none", str(self.repo)], env=self.env)

    def backup(self, img: Path) -> dict[str, Any]:
        self.day += 1
        wall, rss, _ = timed(["borg", "create", "--compression", "zstd,3",
                              f"{self.repo}::day{self.day}", img.name], env=self.env,
                             cwd=img.parent)
        return {"seconds": wall, "maxrss_kib": rss}

    def restore(self, img: Path, target: Path) -> tuple[dict[str, Any], Path]:
        target.mkdir(parents=True)
        wall, rss, _ = timed(["borg", "extract", f"{self.repo}::day{self.day}"],
                             env=self.env, cwd=target)
        return {"seconds": wall, "maxrss_kib": rss}, target / img.name


PY_SPY: Path | None = None  # --py-spy DIR: sample every dpflow operation, all threads


def side(op: str, *args: str, profile: Path | None = None) -> dict[str, Any]:
    """One dpflow operation in its own process (bench/_dpflow_side.py)."""
    env = dict(os.environ)
    cmd = [sys.executable, str(SIDE), op, *args]
    if profile is not None:
        env["DPFLOW_BENCH_PROFILE"] = str(profile)
        if PY_SPY is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            cmd = [spy, "record", "--threads", "--idle", "--rate", "200", "--format", "raw",
                   "-o", str(PY_SPY / f"{profile.stem}.txt"), "--", *cmd]
    wall, rss, out = timed(cmd, env=env, cwd=ROOT)
    r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    r["process_seconds"] = wall
    r["maxrss_kib"] = max(rss, r.get("maxrss_kib", 0))
    return r


# --- the run ---------------------------------------------------------------------------

def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.size_mib * MiB
    res: dict[str, Any] = {"size_bytes": size, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "load_avg_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    prof = args.profile.resolve() if args.profile else None
    if prof:
        prof.mkdir(parents=True, exist_ok=True)

    def pf(name: str) -> Path | None:
        return prof / f"{name}.prof" if prof else None

    src = work / "src"
    src.mkdir()
    img, day2 = src / "disk.img", work / "day2.img"
    t0 = time.perf_counter()
    make_disk(img, size)
    changes = make_next_day(img, day2)
    res["changed_bytes_day2"] = sum(n for _, n in changes)
    res["changed_ranges_day2"] = len(changes)
    digest1, digest2 = content_digest(img), content_digest(day2)
    print(f"disks made in {time.perf_counter() - t0:.0f} s: {args.size_mib} MiB, day 2 "
          f"changes {res['changed_bytes_day2'] / MiB:.0f} MiB in {len(changes)} ranges",
          flush=True)

    # dpflow's world: a Prefect server and vcsim, everything under `work`
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["DPFLOW_HOME"] = str(work / "home")
    from dpflow import prefect_server
    from dpflow_cli.demo import write_config
    from simulators.vcsim import Vcsim

    prefect_server.quiet_console()
    try:
        prefect_server.ensure_server()
        with Vcsim(work_dir=work / "vcsim") as sim:
            sim.create_vm("bench", [size])
            sim.seed_disk("bench", 0, img)
            if content_digest(sim.current_disk_path("bench", 0)) != digest1:
                raise SystemExit("the VM's disk differs from day 1 after seeding")
            cfg = str(write_config(work, sim))
            store_dir = work / "store"
            tools = [Restic(work), Borg(work)]
            subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)

            for day, label in ((1, "day1"), (2, "day2")):
                if day == 2:
                    os.replace(day2, img)  # restic and borg see the same path change
                    t0 = time.perf_counter()
                    with open(img, "rb") as f:  # the guest writes only what changed
                        for off, n in changes:
                            sim.guest_write("bench", 0, off, os.pread(f.fileno(), n, off))
                    res["guest_write_day2_seconds"] = time.perf_counter() - t0
                    if content_digest(sim.current_disk_path("bench", 0)) != digest2:
                        raise SystemExit("the VM's disk differs from day 2 after the writes")
                    subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)
                for tool in tools:
                    r = tool.backup(img)
                    r["repo_bytes"] = du(tool.repo)
                    res.setdefault(tool.name, {})[label] = r
                    print(f"{tool.name} {label}: {r['seconds']:.1f} s", flush=True)
                r = side("backup", cfg, "bench", profile=pf(f"backup_{label}"))
                r["repo_bytes"] = du(store_dir)
                st = side("stats", cfg)
                r.update(chunks=st["chunks"], packs=st["packs"])
                res.setdefault("dpflow", {})[label] = r
                print(f"dpflow {label}: {r['seconds']:.1f} s", flush=True)
            for name in ("restic", "borg", "dpflow"):
                d = res[name]
                d["day1"]["added_bytes"] = d["day1"]["repo_bytes"]
                d["day2"]["added_bytes"] = d["day2"]["repo_bytes"] - d["day1"]["repo_bytes"]
            version2 = res["dpflow"]["day2"]["version_id"]

            res["warmup_seconds"] = warm_up(img, work, args.warmup_mib * MiB)
            for rnd in ("first", "repeated"):
                for tool in tools:
                    target = work / f"{tool.name}-restore"
                    r, restored = tool.restore(img, target)
                    r["ok"] = content_digest(restored) == digest2
                    shutil.rmtree(target)
                    res[tool.name][f"restore_{rnd}"] = r
                out = work / "dpflow-restore.img"
                r = side("restore-file", cfg, version2, str(out), "--workers",
                         str(args.workers), profile=pf(f"restore_file_{rnd}"))
                r["ok"] = content_digest(out) == digest2
                out.unlink()
                res["dpflow"][f"restore_{rnd}"] = r
                name = f"bench-restored-{rnd}"
                r = side("restore-vm", cfg, "bench", version2, name,
                         profile=pf(f"restore_vm_{rnd}"))
                disk = sim.current_disk_path(name, 0)
                r["ok"] = content_digest(disk) == digest2
                disk.unlink()  # space: the VM is never used again
                res["dpflow"][f"restore_vm_{rnd}"] = r
                print(f"restores ({rnd}) done", flush=True)
            for tool in ("restic", "borg", "dpflow"):
                for rnd in ("first", "repeated"):
                    if not res[tool][f"restore_{rnd}"]["ok"]:
                        raise SystemExit(f"{tool} restore ({rnd}) differs from day 2")
            for rnd in ("first", "repeated"):
                if not res["dpflow"][f"restore_vm_{rnd}"]["ok"]:
                    raise SystemExit(f"dpflow restore to a VM ({rnd}) differs from day 2")

            if args.sparse_size_mib:
                res["sparse"] = run_sparse(args, work, sim, pf)
    finally:
        prefect_server.stop_server()
    return res


def run_sparse(args: argparse.Namespace, work: Path, sim: Any, pf: Any) -> dict[str, Any]:
    """dpflow alone on a big thin disk: day 1, a small day 2, a sparse restore — RSS."""
    from dpflow_cli.demo import write_config

    size = args.sparse_size_mib * MiB
    d = work / "sparse"
    d.mkdir()
    img = d / "disk.img"
    make_sparse_disk(img, size, args.sparse_data_mib * MiB)
    sim.create_vm("sparse", [size])
    sim.seed_disk("sparse", 0, img)
    cfg = str(write_config(d, sim))
    out: dict[str, Any] = {"size_bytes": size, "data_bytes": args.sparse_data_mib * MiB}
    out["day1"] = side("backup", cfg, "sparse", profile=pf("sparse_backup_day1"))
    rng = random.Random(45)
    with open(img, "r+b") as f:
        for b in rng.sample(range(size // BLOCK), 1000):
            data = rng.randbytes(BLOCK)
            os.pwrite(f.fileno(), data, b * BLOCK)
            sim.guest_write("sparse", 0, b * BLOCK, data)
    out["day2"] = side("backup", cfg, "sparse", profile=pf("sparse_backup_day2"))
    target = d / "restore.img"
    r = side("restore-file", cfg, out["day2"]["version_id"], str(target), "--sparse",
             profile=pf("sparse_restore_file"))
    r["ok"] = content_digest(target) == content_digest(img)
    target.unlink()
    out["restore"] = r
    st = side("stats", cfg)
    out.update(chunks=st["chunks"], packs=st["packs"])
    if not r["ok"]:
        raise SystemExit("dpflow sparse restore differs from the disk")
    return out


# --- report ----------------------------------------------------------------------------

def report(res: dict[str, Any]) -> dict[str, Any]:
    size = res["size_bytes"]
    mb = size / 1e6
    R, B, D = res["restic"], res["borg"], res["dpflow"]

    def row(tool: str, phase: str, r: dict[str, Any], added: bool = True) -> str:
        rss = r["maxrss_kib"] / 1024
        extra = f" (process {r['process_seconds']:.1f} s)" if "process_seconds" in r else ""
        add = f"{r['added_bytes'] / 1e6:9.1f}" if added and "added_bytes" in r else " " * 9
        repo = f"{r['repo_bytes'] / 1e6:9.1f}" if "repo_bytes" in r else " " * 9
        return (f"{tool:7} {phase:20} {r['seconds']:8.2f} {mb / r['seconds']:8.0f} {add} "
                f"{repo} {rss:8.0f}{extra}")

    print(f"\nimage backup of a {size // MiB} MiB mixed disk (35% zero, 35% text, 30% random);"
          f" day 2 changed {res['changed_bytes_day2'] / MiB:.0f} MiB; "
          f"load avg at start {res['load_avg_at_start'][0]:.2f} on {res['cpus']} CPUs")
    print(f"{'tool':7} {'phase':20} {'wall s':>8} {'MB/s':>8} {'added MB':>9} "
          f"{'repo MB':>9} {'RSS MiB':>8}")
    for name, r in (("restic", R), ("borg", B), ("dpflow", D)):
        print(row(name, "day 1 full", r["day1"]))
        print(row(name, "day 2" + (" CBT" if name == "dpflow" else ""), r["day2"]))
        for rnd in ("first", "repeated"):
            print(row(name, f"restore {rnd}" + (" file" if name == "dpflow" else ""),
                      r[f"restore_{rnd}"]))
    for rnd in ("first", "repeated"):
        print(row("dpflow", f"restore {rnd} VM", D[f"restore_vm_{rnd}"]))
    print(f"dpflow store: {D['day2']['chunks']} chunks in {D['day2']['packs']} packs after "
          f"day 2 ({D['day1']['chunks']} / {D['day1']['packs']} after day 1); "
          f"day 2 read {D['day2']['bytes_read'] / MiB:.0f} MiB over HTTPS")
    sp = res.get("sparse")
    if sp:
        print(f"sparse {sp['size_bytes'] // MiB} MiB disk ({sp['data_bytes'] // MiB} MiB data)"
              f": day 1 {sp['day1']['seconds']:.1f} s / {sp['day1']['maxrss_kib'] / 1024:.0f} "
              f"MiB, day 2 {sp['day2']['seconds']:.1f} s / "
              f"{sp['day2']['maxrss_kib'] / 1024:.0f} MiB, restore (sparse) "
              f"{sp['restore']['seconds']:.1f} s / {sp['restore']['maxrss_kib'] / 1024:.0f} "
              f"MiB; {sp['chunks']} chunks in {sp['packs']} packs")

    dp_rss = max(D[k]["maxrss_kib"] for k in ("day1", "day2", "restore_first",
                                              "restore_repeated", "restore_vm_first",
                                              "restore_vm_repeated")) / 1024
    targets = [
        ("day-1 throughput vs restic", R["day1"]["seconds"] / D["day1"]["seconds"], ">=", 2.0),
        ("day-2 wall, restic / dpflow", R["day2"]["seconds"] / D["day2"]["seconds"], ">=",
         20.0),
        ("day-2 bytes added / restic's", D["day2"]["added_bytes"] / R["day2"]["added_bytes"],
         "<=", 0.25),
        ("restore to file vs restic (first)",
         R["restore_first"]["seconds"] / D["restore_first"]["seconds"], ">=", 1.5),
        ("restore to file vs restic (repeated)",
         R["restore_repeated"]["seconds"] / D["restore_repeated"]["seconds"], ">=", 1.5),
        ("repository after day 1 / restic's",
         D["day1"]["repo_bytes"] / R["day1"]["repo_bytes"], "<=", 1.05),
        (f"peak RSS MiB, {size // MiB} MiB disk", dp_rss, "<=", 256.0),
    ]
    if sp:
        sp_rss = max(sp[k]["maxrss_kib"] for k in ("day1", "day2", "restore")) / 1024
        targets.append((f"peak RSS MiB, {sp['size_bytes'] // MiB} MiB sparse disk", sp_rss,
                        "<=", 256.0))
    print("\ntargets (issue 3)")
    out = []
    for name, value, op, goal in targets:
        ok = value >= goal if op == ">=" else value <= goal
        print(f"  {name:40} {value:8.2f}  {op} {goal:<6}  {'PASS' if ok else 'MISS'}")
        out.append({"target": name, "value": value, "op": op, "goal": goal, "pass": ok})
    return {"targets": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=4096, help="mixed disk size (default 4096)")
    ap.add_argument("--sparse-size-mib", type=int, default=32768,
                    help="sparse disk for the dpflow RSS run; 0 skips it (default 32768)")
    ap.add_argument("--sparse-data-mib", type=int, default=1024,
                    help="data written in the sparse disk (default 1024)")
    ap.add_argument("--warmup-mib", type=int, default=4096,
                    help="bytes written and fsynced before the restores (default 4096)")
    ap.add_argument("--workers", type=int, default=2,
                    help="dpflow restore-to-file workers (default 2)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--profile", type=Path,
                    help="write a cProfile of each dpflow operation into this directory")
    ap.add_argument("--py-spy", type=Path, dest="py_spy",
                    help="sample each dpflow operation with py-spy (all threads) into this "
                         "directory; run under `uv run --with py-spy`; RSS figures then "
                         "include py-spy")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.py_spy:
        global PY_SPY
        PY_SPY = args.py_spy.resolve()
        PY_SPY.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile or PY_SPY
    work = Path(tempfile.mkdtemp(prefix="dpflow-bench-", dir="/var/tmp"))
    try:
        res = run(args, work)
        if args.json:  # the raw figures first, in case the report fails
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(res, indent=2, default=str))
        res.update(report(res))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(res, indent=2, default=str))
            print(f"figures written to {args.json}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

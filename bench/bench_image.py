"""Image backup benchmark: dpflow's CLI against restic and borg on the same bytes, every
figure the wall time of a whole command as its user runs it.

One command, one run: a seeded mixed 4 GiB disk (bench/disk_image.py) and its next
day (~200 MiB changed), and a 32 GiB thin disk holding the same data and the same
day-2 change (so the growth with disk size shows). In the same run: the physical
limits on the same file (`cat`, `zstd -T2 -3`), restic and borg on the local file,
and `dpflow backup vm` through the simulator in both transports (direct: the
datastore's directory; network: HTTPS through vcsim), then day-2 restores to a file
(`restic restore`, `borg extract`, `dpflow restore vm --to-dir`) after a write warm-up,
first and repeated, each checked against the source by digest. Prints a table and
the targets with PASS/MISS; --json FILE writes every figure. See bench/README.md.

    uv run python bench/bench_image.py [--size-mib 4096] [--big-mib 32768]
                                       [--json bench/results/image.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_tools import (  # noqa: E402
    Borg,
    MiB,
    Restic,
    content_digest,
    dpflow,
    du,
    limit,
    load,
    side,
    warm_up,
)
from bench.disk_image import copy_sparse, make_disk, make_next_day  # noqa: E402


def images(cache: Path, size_mib: int) -> tuple[Path, Path, list[tuple[int, int]]]:
    """Day 1, day 2 and the changed ranges; made once per size and seed, then reused."""
    cache.mkdir(parents=True, exist_ok=True)
    day1, day2 = cache / f"disk-{size_mib}.img", cache / f"day2-{size_mib}.img"
    changes = cache / f"changes-{size_mib}.json"
    if not day1.exists():
        make_disk(day1, size_mib * MiB)
    if not (day2.exists() and changes.exists()):
        changes.write_text(json.dumps(make_next_day(day1, day2)))
    return day1, day2, [tuple(c) for c in json.loads(changes.read_text())]


def thin(src: Path, dst: Path, size: int) -> None:
    """`src`'s bytes at the start of a `size`-byte sparse file."""
    copy_sparse(src, dst)
    os.truncate(dst, size)


def write_configs(work: Path, sim: Any, tag: str) -> dict[str, str]:
    """Two data-centre files, one per transport, each with its own store and catalog."""
    from dpflow_cli.demo import write_config

    out = {}
    for transport, proxy in (("direct", {"transports": ["direct", "network"],
                                         "datastores": {k: str(v) for k, v in
                                                        sim.datastores.items()}}),
                             ("network", {"transports": ["network"]})):
        d = work / f"{tag}-{transport}"
        d.mkdir()
        path = write_config(d, sim)
        cfg = yaml.safe_load(path.read_text())
        cfg["proxies"] = [proxy]
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out[transport] = str(path)
    return out


def backup(cfg: str, vm: str) -> dict[str, Any]:
    r = dpflow("backup", "vm", vm, "-c", cfg)
    r.update(side("last", cfg, vm))
    r["repo_bytes"] = du(Path(cfg).parent / "store")
    r["load"] = load()
    return r


def run_size(args: argparse.Namespace, work: Path, sim: Any, size_mib: int,
             day1: Path, day2: Path, changes: list[tuple[int, int]],
             full: bool) -> dict[str, Any]:
    """Every tool on one disk size. `full`: borg, network mode and restores too."""
    size = size_mib * MiB
    src = work / f"src-{size_mib}"
    src.mkdir()
    img = src / "disk.img"
    thin(day1, img, size)
    res: dict[str, Any] = {"size_bytes": size, "changed_bytes_day2": sum(n for _, n in changes),
                           "changed_ranges_day2": len(changes)}
    digest1 = content_digest(img)
    res["limits"] = {k: limit(k, img) | {"load": load()} for k in ("read", "zstd")}
    vm = f"bench{size_mib}"
    sim.create_vm(vm, [size])
    sim.seed_disk(vm, 0, img)
    if content_digest(sim.read_current_disk(vm, 0)) != digest1:
        raise SystemExit("the VM's disk differs from day 1 after seeding")
    cfgs = write_configs(work, sim, vm)
    for d in ("restic", "borg"):
        (work / f"{d}-{size_mib}").mkdir()
    tools: list[Any] = [Restic(work / f"restic-{size_mib}")]
    if full:
        tools.append(Borg(work / f"borg-{size_mib}"))
    transports = ["direct", "network"] if full else ["direct"]

    for day in ("day1", "day2"):
        if day == "day2":
            thin(day2, img, size)  # restic and borg see the same path change
            t0 = time.perf_counter()
            with open(img, "rb") as f:  # the guest writes only what changed
                for off, n in changes:
                    sim.guest_write(vm, 0, off, os.pread(f.fileno(), n, off))
            res["guest_write_day2_seconds"] = time.perf_counter() - t0
            if content_digest(sim.read_current_disk(vm, 0)) != content_digest(img):
                raise SystemExit("the VM's disk differs from day 2 after the writes")
        for tool in tools:
            r = tool.backup(img) | {"load": load()}
            r["repo_bytes"] = du(tool.repo)
            res.setdefault(tool.name, {})[day] = r
            print(f"{size_mib} MiB {tool.name} {day}: {r['seconds']:.1f} s "
                  f"(load {r['load']:.1f})", flush=True)
        for t in transports:
            r = backup(cfgs[t], vm)
            res.setdefault(f"dpflow-{t}", {})[day] = r
            print(f"{size_mib} MiB dpflow {t} {day}: {r['seconds']:.1f} s "
                  f"(load {r['load']:.1f})", flush=True)
    for d in res.values():
        if isinstance(d, dict) and "day2" in d and "repo_bytes" in d["day2"]:
            d["day1"]["added_bytes"] = d["day1"]["repo_bytes"]
            d["day2"]["added_bytes"] = d["day2"]["repo_bytes"] - d["day1"]["repo_bytes"]
    if full:
        restores(args, work, res, tools, img, vm, cfgs["direct"])
    return res


def restores(args: argparse.Namespace, work: Path, res: dict[str, Any], tools: list[Any],
             img: Path, vm: str, cfg: str) -> None:
    """Day 2 to a file, first and repeated, after a write warm-up; then one VM restore."""
    want = content_digest(img)
    res["warmup_seconds"] = warm_up(img, work, args.warmup_mib * MiB)
    for rnd in ("first", "repeated"):
        for tool in tools:
            target = work / f"{tool.name}-restore"
            r, restored = tool.restore(img, target)
            r["ok"] = content_digest(restored) == want
            r["load"] = load()
            shutil.rmtree(target)
            res[tool.name][f"restore_{rnd}"] = r
        target = work / "dpflow-restore"
        target.mkdir()
        r = dpflow("restore", "vm", vm, "--to-dir", str(target), "-c", cfg)
        r["ok"] = content_digest(target / f"{vm}-disk0.img") == want
        r["load"] = load()
        shutil.rmtree(target)
        res["dpflow-direct"][f"restore_{rnd}"] = r
        print(f"restores ({rnd}) done", flush=True)
        for name in [t.name for t in tools] + ["dpflow-direct"]:
            if not res[name][f"restore_{rnd}"]["ok"]:
                raise SystemExit(f"{name} restore ({rnd}) differs from day 2")
    r = dpflow("restore", "vm", vm, "--as", f"{vm}-r", "-c", cfg)
    r["load"] = load()
    res["dpflow-direct"]["restore_vm"] = r


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "load_avg_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    day1, day2, changes = images(args.cache_dir, args.size_mib)
    print(f"disks ready in {time.perf_counter() - t0:.0f} s", flush=True)
    # a server of the run's own (or the one PREFECT_API_URL names, left running)
    os.environ["DPFLOW_HOME"] = str(work / "home")
    from dpflow import prefect_server
    from simulators.vcsim import Vcsim

    prefect_server.quiet_console()
    try:
        prefect_server.ensure_server()  # the CLI finds it through DPFLOW_HOME
        with Vcsim(work_dir=work / "vcsim") as sim:
            res["sizes"] = [run_size(args, work, sim, args.size_mib, day1, day2, changes,
                                     full=True)]
            save(args, res)  # what is measured survives a failure later on
            if args.big_mib:
                res["sizes"].append(run_size(args, work, sim, args.big_mib, day1, day2,
                                             changes, full=False))
    finally:
        prefect_server.stop_server()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["load_avg_at_end"] = os.getloadavg()
    return res


def save(args: argparse.Namespace, res: dict[str, Any]) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))


def help_seconds() -> list[float]:
    """`dpflow --help`, three times (the fixed start-up of every command)."""
    return sorted(dpflow("--help")["seconds"] for _ in range(3))


# --- report ----------------------------------------------------------------------------

def report(res: dict[str, Any]) -> list[dict[str, Any]]:
    end = res.get("load_avg_at_end", [float("nan")])[0]
    print(f"\nstarted {res['started']}, load average {res['load_avg_at_start'][0]:.1f} at "
          f"start, {end:.1f} at end, {res['cpus']} CPUs; every figure the whole command")
    print(f"{'disk':>9} {'tool':15} {'phase':18} {'wall s':>8} {'MB/s':>7} {'added MB':>9} "
          f"{'repo MB':>9} {'RSS MiB':>8} {'load':>5}")
    for s in res["sizes"]:
        mb = s["size_bytes"] / 1e6
        tag = f"{s['size_bytes'] // MiB} MiB"
        for k, r in s["limits"].items():
            label = {"read": "plain read (cat)", "zstd": "zstd -T2 -3"}[k]
            print(f"{tag:>9} {'limit':15} {label:18} {r['seconds']:8.2f} "
                  f"{mb / r['seconds']:7.0f} {'':9} {'':9} {'':8} {r['load']:5.1f}")
        for tool in ("restic", "borg", "dpflow-direct", "dpflow-network"):
            for phase, r in s.get(tool, {}).items():
                add = f"{r['added_bytes'] / 1e6:9.1f}" if "added_bytes" in r else " " * 9
                repo = f"{r['repo_bytes'] / 1e6:9.1f}" if "repo_bytes" in r else " " * 9
                print(f"{tag:>9} {tool:15} {phase:18} {r['seconds']:8.2f} "
                      f"{mb / r['seconds']:7.0f} {add} {repo} {r['maxrss_kib'] / 1024:8.0f} "
                      f"{r.get('load', 0):5.1f}")
    helps = res.get("help_seconds") or [float("nan")] * 3
    print(f"dpflow --help: {', '.join(f'{x:.2f}' for x in helps)} s")

    small, big = res["sizes"][0], res["sizes"][-1]
    R, D = small["restic"], small["dpflow-direct"]
    rss = max(r["maxrss_kib"] for s in res["sizes"] for t in ("dpflow-direct", "dpflow-network")
              for r in s.get(t, {}).values()) / 1024
    targets = [
        ("day 1 direct vs restic (throughput)", R["day1"]["seconds"] / D["day1"]["seconds"],
         ">=", 1.5),
        ("day 1 direct / zstd -T2 -3 limit",
         small["limits"]["zstd"]["seconds"] / D["day1"]["seconds"], ">=", 0.7),
        ("day 1 network vs restic (reported)",
         R["day1"]["seconds"] / small["dpflow-network"]["day1"]["seconds"], ">=", 0.0),
        ("restore day 2 to file vs restic (first)",
         R["restore_first"]["seconds"] / D["restore_first"]["seconds"], ">=", 1.5),
        ("restore day 2 to file vs restic (rep.)",
         R["restore_repeated"]["seconds"] / D["restore_repeated"]["seconds"], ">=", 1.5),
        ("repository after day 1 / restic's", D["day1"]["repo_bytes"] / R["day1"]["repo_bytes"],
         "<=", 1.05),
        ("peak RSS MiB, every size", rss, "<=", 512.0),
        (f"fixed-cost bound: day 2 / day 1 ({small['size_bytes'] // MiB} MiB)",
         D["day2"]["seconds"] / D["day1"]["seconds"], "<=", 0.05),
        ("dpflow --help s (median of 3)", helps[1], "<=", 0.5),
    ]
    if big is not small:
        BD, BR = big["dpflow-direct"], big["restic"]
        targets += [
            (f"day 2 wall, {big['size_bytes'] // MiB} / {small['size_bytes'] // MiB} MiB",
             BD["day2"]["seconds"] / D["day2"]["seconds"], "<=", 1.3),
            (f"day 2 at {big['size_bytes'] // MiB} MiB, restic / dpflow",
             BR["day2"]["seconds"] / BD["day2"]["seconds"], ">=", 20.0),
        ]
    print("\ntargets")
    out = []
    for name, value, op, goal in targets:
        ok = value >= goal if op == ">=" else value <= goal
        print(f"  {name:42} {value:8.2f}  {op} {goal:<6}  {'PASS' if ok else 'MISS'}")
        out.append({"target": name, "value": value, "op": op, "goal": goal, "pass": ok})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=4096, help="mixed disk (default 4096)")
    ap.add_argument("--big-mib", type=int, default=32768,
                    help="thin disk with the same data and change; 0 skips it (default 32768)")
    ap.add_argument("--warmup-mib", type=int, default=4096,
                    help="bytes written and fsynced before the restores (default 4096)")
    ap.add_argument("--cache-dir", type=Path, default=Path("/var/tmp/dpflow-bench-cache"),
                    help="where the generated disk images are kept between runs")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--report", type=Path, help="only print the report of a JSON file")
    args = ap.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return
    work = Path(tempfile.mkdtemp(prefix="dpflow-bench-", dir="/var/tmp"))
    try:
        res = run(args, work)
        res["help_seconds"] = help_seconds()
        save(args, res)  # the raw figures first, in case the report fails
        res["targets"] = report(res)
        save(args, res)
        if args.json:
            print(f"figures written to {args.json}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

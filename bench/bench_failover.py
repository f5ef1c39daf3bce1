"""Continuous Access figures on two simulated EVA processes linked over HTTPS.

1. RPO: a host at site A writes 1 MiB blocks at a fixed rate while the inter-site link
   carries less than that (async) or every write crosses before it is acknowledged
   (sync); then the link is cut, as if site A were lost. Reported: the writes and bytes
   site B does not have (what an unplanned failover loses) and the age of the oldest
   unsent write (RPO in seconds), and the host's mean write latency.
2. Failover time: the real `failover_site` flow (planned: hide LUNs at A, wait in sync,
   fail over, present at B) over 2 and 20 DR groups, from the plan to the last group's
   LUNs presented at site B, on a local Prefect server. No VMs are brought up (dpflow
   does not yet register and power on VMs at the remote site), so this is the storage
   part of a site failover only.

    uv run python bench/bench_failover.py [--seconds 5] [--rate 8] [--bandwidth-mib 4]
                                          [--json bench/results/failover.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.smis import SmisArray  # noqa: E402
from simulators.sites import TwoSites  # noqa: E402

MiB = 1 << 20


def wait(cond: Any, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def rpo(s: TwoSites, mode: str, seconds: float, rate: float, bandwidth: float) -> dict[str, Any]:
    a = SmisArray(s.a.connection())
    name = f"rpo-{mode}"
    a.create_vdisk(name, 256 * MiB, "DG1")
    lun = a.present(name, "esx-a").lun
    a.create_dr_group(name, [name], "EVA-B", mode)  # type: ignore[arg-type]
    wait(lambda: a.get_dr_group(name).in_sync)
    s.link(up=True, bandwidth=bandwidth, delay_s=0.002)
    host = s.host("A")
    block = os.urandom(MiB)
    lat, n, t0 = [], 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        due = t0 + n / rate
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        w0 = time.perf_counter()
        host.write(lun, (n % 256) * MiB, block)
        lat.append(time.perf_counter() - w0)
        n += 1
    s.link(up=False)  # site A lost now
    src, dst = s.dr_info("A", name), s.dr_info("B", name)
    out = {"mode": mode, "writes": n, "write_rate_mib_s": round(n / seconds, 1),
           "link_mib_s": None if mode == "sync" else bandwidth / MiB,
           "writes_lost": src["seq"] - dst["seq"], "mib_lost": src["log_bytes"] / MiB,
           "rpo_s": round(src["lag_s"], 2), "write_ms": round(1000 * sum(lat) / len(lat), 1)}
    s.link(up=True, bandwidth=None, delay_s=0.0)
    wait(lambda: a.get_dr_group(name).in_sync)
    a.delete_dr_group(name)
    a.unpresent(name, "esx-a")
    a.delete_vdisk(name)
    return out


def failover_time(s: TwoSites, work: Path, groups: int) -> dict[str, Any]:
    from flows.site_failover import failover_site

    a = SmisArray(s.a.connection())
    specs = []
    for i in range(groups):
        v = f"g{groups}-{i}"
        a.create_vdisk(v, 4 * MiB, "DG1")
        lun = a.present(v, "esx-a").lun
        s.host("A").write(lun, 0, os.urandom(MiB))
        a.create_dr_group(v, [v], "EVA-B")
        specs.append({"name": v, "home": "A", "remote": "B", "vdisks": [v]})
    for g in specs:
        wait(lambda g=g: a.get_dr_group(g["name"]).in_sync)
    cfg = s.write_config(work / f"dc-{groups}.yaml", specs)
    t0 = time.perf_counter()
    res = failover_site(str(cfg), "B", planned=True)
    wall = time.perf_counter() - t0
    assert res.ok, [g.message for g in res.groups if g.status == "failed"]
    return {"dr_groups": groups, "flow_s": round(res.seconds, 1), "wall_s": round(wall, 1),
            "per_group_s": round(res.seconds / groups, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=8.0, help="host writes of 1 MiB per second")
    ap.add_argument("--bandwidth-mib", type=float, default=4.0, help="async link MiB/s")
    ap.add_argument("--groups", default="2,20", help="DR group counts to fail over")
    ap.add_argument("--skip-rpo", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        os.environ["DPFLOW_HOME"] = str(work / "home")
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        from dpflow import prefect_server

        results: dict[str, Any] = {"rpo": [], "failover": []}
        with TwoSites.start(work / "sites", pool_bytes=2048 * MiB) as s:
            for mode in () if args.skip_rpo else ("async", "sync"):
                r = rpo(s, mode, args.seconds, args.rate, args.bandwidth_mib * MiB)
                results["rpo"].append(r)
                print(f"RPO {mode:>5}: {r['writes']} writes at {r['write_rate_mib_s']} MiB/s, "
                      f"link {r['link_mib_s'] or 'unlimited'} MiB/s: lost {r['writes_lost']} "
                      f"writes ({r['mib_lost']:.0f} MiB), RPO {r['rpo_s']} s, host write "
                      f"{r['write_ms']} ms", flush=True)
            prefect_server.quiet_defaults()
            os.environ["PREFECT_API_URL"] = prefect_server.ensure_server()
            try:
                for n in (int(x) for x in args.groups.split(",")):
                    f = failover_time(s, work, n)
                    results["failover"].append(f)
                    if args.json:  # what is measured so far survives a timeout
                        args.json.write_text(json.dumps(results, indent=2) + "\n")
                    print(f"planned failover of {n:>2} DR groups: {f['flow_s']} s in the flow "
                          f"({f['per_group_s']} s per group), {f['wall_s']} s wall", flush=True)
            finally:
                prefect_server.stop_server()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Continuous Access figures on two simulated EVA processes linked over HTTPS.

1. RPO: a host at site A writes 1 MiB blocks at a fixed rate while the inter-site link
   carries less than that (async) or every write crosses before it is acknowledged
   (sync); then the link is cut, as if site A were lost. Reported: the writes and bytes
   site B does not have (what an unplanned failover loses) and the age of the oldest
   unsent write (RPO in seconds), and the host's mean write latency.
2. Failover time: the real `failover_site` flow, planned, for 2 and 20 VMs on one VMFS
   datastore (one EVA vdisk, one sync DR group) with two vCenter simulators: power the
   VMs off at A (the host writes the datastore back to its LUN), unregister, unmount,
   hide the LUN, wait in sync, fail over, present at B, rescan, resignature, then per
   priority group (a fifth of the VMs in group 1, the rest in group 2) register, re-map
   the network, power on, wait for the guest heartbeat and probe a file through guest
   operations. Reported: plan → last VM up (the flow's clock), wall time, and the
   1-minute load average before and after (the machine is shared: figures move with it).

    uv run python bench/bench_failover.py [--seconds 5] [--rate 8] [--bandwidth-mib 4]
                                          [--vms 2,20] [--json bench/results/failover.json]
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


def failover_time(s: TwoSites, work: Path, vms: int) -> dict[str, Any]:
    from flows.dr_admin import protect
    from flows.site_failover import failover_site
    from simulators import site_vms as w

    a = SmisArray(s.a.connection())
    name = f"fo{vms}"
    a.create_vdisk(f"{name}-lun", 256 * MiB, "DG1")
    lun = a.present(f"{name}-lun", "esx-a").lun
    vca = s.vcenters["A"]
    ds = w.format_datastore(vca, f"DS-{name}", w.lun_id(s.a, "esx-a", lun))
    names = [f"{name}-vm{i:02d}" for i in range(vms)]
    for vm in names:
        w.create_vm(vca, vm, ds, 4 * MiB, power_on=False)
        w.install_guest(vca, vm, {"app/health": b"ok\n"})
        w.guest_write(vca, vm, 3 * MiB, os.urandom(256 * 1024))
        w.power_on(vca, vm)
    cfg = s.write_config(work / f"dc-{vms}.yaml", [{
        "name": name, "home": "A", "remote": "B", "vdisks": [f"{name}-lun"], "mode": "sync",
        "datastore": ds, "vms": [{"name": vm, "priority": 1 if i < max(1, vms // 5) else 2,
                                  "probes": ["guest-file:/app/health"]}
                                 for i, vm in enumerate(names)]}])
    protect(str(cfg))
    wait(lambda: a.get_dr_group(name).in_sync)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = failover_site(str(cfg), "B", planned=True)
    wall = time.perf_counter() - t0
    assert res.ok, ([g.message for g in res.groups], [v for v in res.vms if v.status != "up"])
    vcb = s.vcenters["B"]
    sent_ok = all(vcb.vm_exists(vm) for vm in names)
    last_up = max(v.up_at_s or 0.0 for v in res.vms)
    return {"vms": vms, "plan_to_last_vm_up_s": round(last_up, 1),
            "flow_s": round(res.seconds, 1), "wall_s": round(wall, 1),
            "per_vm_s": round(last_up / vms, 2), "all_registered_at_b": sent_ok,
            "load_1min_before": round(load0, 1), "load_1min_after": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=8.0, help="host writes of 1 MiB per second")
    ap.add_argument("--bandwidth-mib", type=float, default=4.0, help="async link MiB/s")
    ap.add_argument("--vms", default="2,20", help="VM counts to fail over")
    ap.add_argument("--skip-rpo", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        os.environ["DPFLOW_HOME"] = str(work / "home")
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        from dpflow import prefect_server

        results: dict[str, Any] = {"rpo": [], "failover": []}
        with TwoSites.start(work / "sites", pool_bytes=2048 * MiB, vcenters=True) as s:
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
                for n in (int(x) for x in args.vms.split(",")):
                    f = failover_time(s, work, n)
                    results["failover"].append(f)
                    if args.json:  # what is measured so far survives a timeout
                        args.json.write_text(json.dumps(results, indent=2) + "\n")
                    print(f"planned failover of {n:>2} VMs: plan → last VM up "
                          f"{f['plan_to_last_vm_up_s']} s ({f['per_vm_s']} s per VM), flow "
                          f"{f['flow_s']} s, wall {f['wall_s']} s; load average "
                          f"{f['load_1min_before']} → {f['load_1min_after']}", flush=True)
            finally:
                prefect_server.stop_server()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The night of small incrementals: N VMs over two vCenters (two vcsim instances, one per
site), each changed by 256 KiB since its last backup, backed up one after another (the
old loop) and by backup_vms at 1, 2 and 4 backups at once per proxy; the Prefect server
and the catalog on SQLite, or both on PostgreSQL (Debian's, started here).

Why: the nightly window is per-VM control overhead (a flow, a session, a snapshot, a
few tasks) far more than bytes. Reported per night: total wall, VMs/min, the VM flows'
own mean seconds, the control overhead per VM = (wall x concurrency - sum of the VM
flows' own seconds) / N (the time a backup slot spends outside a VM's flow), the HTTP
requests this process sent to the Prefect API per VM (events and logs included; the
server's own work not), the CPU seconds per VM of this process, the Prefect server, the
vcsims and PostgreSQL (where the time goes), and the 1-minute load average at start and
end (the machine may be shared: read every figure beside it).

Run: nice uv run python bench/bench_night.py --vms 200 --server sqlite postgres \
         --json bench/results/night.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 1 << 20
API_CALLS = [0]


def count_api_calls() -> None:
    """Count every HTTP request Prefect's clients (sync and async) send from here."""
    import httpx

    for cls in (httpx.Client, httpx.AsyncClient):
        send = cls.send

        def counted(self: Any, request: Any, *a: Any, _send: Any = send, **k: Any) -> Any:
            if "/api/" in str(request.url):
                API_CALLS[0] += 1
            return _send(self, request, *a, **k)
        cls.send = counted  # type: ignore[method-assign]


ROLES = (("prefect server start", "server"), ("dpflow-vcsim", "vcsim"), ("bin/postgres", "pg"),
         ("postgres:", "pg"))


MARKERS: list[str] = []  # paths in the command lines of the processes that serve this run


def cpu_by_role(work: Path) -> dict[str, float]:
    """CPU seconds so far of this process ("dpflow") and of what serves it: the Prefect
    server, the vcsims and PostgreSQL (its postmaster runs detached, found by its data
    directory under `work`), so a night's CPU per VM says which of them the time goes to."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        procs[int(d)] = (int(stat[1]), cmd, (int(stat[11]) + int(stat[12])) / tick)
    me, out = os.getpid(), dict.fromkeys(["dpflow", "server", "vcsim", "pg"], 0.0)

    def role(pid: int) -> str | None:
        seen = 0
        while pid in procs and seen < 64:
            ppid, cmd, _ = procs[pid]
            if pid == me:
                return "dpflow"
            if ppid == me or any(m in cmd for m in [str(work), *MARKERS]):
                return next((r for key, r in ROLES if key in cmd), "dpflow")
            pid, seen = ppid, seen + 1
        return None

    for pid, (_, cmd, t) in procs.items():
        if pid == me:
            out["dpflow"] += t
            continue
        r = role(pid)
        if r is not None:
            own = next((x for key, x in ROLES if key in cmd), None)
            out[own or r] += t
    return out


def night(dc: str, vms: list[str], mode: str) -> tuple[float, list[Any]]:
    from flows.night import backup_vms
    from flows.vm_image import backup_vm_image

    t0 = time.perf_counter()
    results = ([backup_vm_image(dc, vm) for vm in vms] if mode == "loop"
               else backup_vms(dc, vms))
    return time.perf_counter() - t0, results


def change(sims: dict[str, Any], placed: dict[str, str], day: int) -> None:
    for vm, site in placed.items():
        sims[site].guest_write(vm, 0, (day * 256 * 1024) % (3 * MiB),
                               bytes([day]) * (256 * 1024))


@contextmanager
def servers(work: Path, server: str) -> Iterator[str]:
    """The Prefect server (and a PostgreSQL for it and the catalog); yields the catalog URL."""
    from bench.postgres import Postgres

    os.environ.update(DPFLOW_HOME=str(work / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    os.environ.pop("PREFECT_API_URL", None)
    with ExitStack() as stack:
        catalog = "sqlite:///catalog.db"
        os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        if server == "postgres":
            pg = stack.enter_context(Postgres())
            MARKERS.append(str(pg.root))
            pg.create_db("prefect")
            pg.create_db("catalog")
            os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url("prefect")
            catalog = pg.url("catalog", driver="psycopg")
        from dpflow import prefect_server

        prefect_server.ensure_server()
        stack.callback(prefect_server.stop_server)
        yield catalog


def run_server(work: Path, server: str, n: int, per_proxy: list[int], out: dict) -> None:
    from simulators.vcsim import Vcsim

    work.mkdir(parents=True)
    with servers(work, server) as catalog, Vcsim(work_dir=work / "vc-a") as a, \
            Vcsim(work_dir=work / "vc-b") as b:
        sims = {"site-a": a, "site-b": b}
        placed = {f"night-{i:04d}": ("site-a" if i % 2 == 0 else "site-b") for i in range(n)}
        for vm, site in placed.items():
            sims[site].create_vm(vm, [4 * MiB])
            sims[site].seed_disk(vm, 0, os.urandom(4 * MiB))
        os.environ.update(BENCH_VC_PASSWORD=a.password)
        cfg = work / "dc.yaml"

        def write(per: int) -> str:
            cfg.write_text(yaml.safe_dump({
                "vcenters": [{"name": site, "host": s.host, "port": s.port, "user": s.username,
                              "password": {"env": "BENCH_VC_PASSWORD"},
                              "ca_file": str(s.ca_file)} for site, s in sims.items()],
                "stores": [{"name": "library", "path": "store"}],
                "catalog_url": catalog,
                "limits": {"per_proxy": per, "per_datastore": per, "per_host": per}}))
            return str(cfg)
        vms = list(placed)
        wall, _ = night(write(4), vms, "parallel")  # day 1: full backups, not compared
        print(f"[{server}] day 1 (full, 4 at once): {wall:.1f} s", flush=True)
        for day, (mode, per) in enumerate([("loop", 1)] + [("parallel", p) for p in per_proxy],
                                          2):
            change(sims, placed, day)
            load0, calls0, cpu0 = os.getloadavg()[0], API_CALLS[0], cpu_by_role(work)
            wall, results = night(write(per), vms, mode)
            cpu1 = cpu_by_role(work)
            own = [r.seconds for r in results]
            row = {"server": server, "vms": n, "mode": mode, "at_once": per,
                   "wall_s": round(wall, 1), "vms_per_min": round(n / wall * 60, 1),
                   "vm_flow_s_mean": round(statistics.mean(own), 2),
                   "overhead_per_vm_s": round((wall * per - sum(own)) / n, 2),
                   "api_calls_per_vm": round((API_CALLS[0] - calls0) / n, 1),
                   "cpu_s_per_vm": {r: round((cpu1[r] - cpu0[r]) / n, 2) for r in cpu1},
                   "completed": sum(r.status == "completed" for r in results),
                   "failures": sorted({r.message[:160] for r in results
                                       if r.status != "completed"})[:3],
                   "load_start": round(load0, 1), "load_end": round(os.getloadavg()[0], 1)}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
            if out.get("json"):
                Path(out["json"]).write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--vms", type=int, default=200)
    ap.add_argument("--server", nargs="+", default=["sqlite"], choices=["sqlite", "postgres"])
    ap.add_argument("--per-proxy", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if len(args.server) > 1:  # one process per server: Prefect keeps its API URL per process
        for server in args.server:
            subprocess.run([sys.executable, __file__, "--vms", str(args.vms), "--server", server,
                            "--per-proxy", *map(str, args.per_proxy), "--json", args.json],
                           check=True)
        return
    count_api_calls()
    work = Path(tempfile.mkdtemp(prefix="dpflow-night-", dir="/var/tmp"))
    out: dict[str, Any] = {"json": args.json, "cpus": os.cpu_count(), "rows": [],
                           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if args.json and Path(args.json).exists():  # earlier servers' rows are kept
        out["rows"] = json.loads(Path(args.json).read_text())["rows"]
    run_server(work / args.server[0], args.server[0], args.vms, args.per_proxy, out)
    print(f"{'server':<9}{'mode':<10}{'at once':>8}{'wall s':>9}{'VMs/min':>9}"
          f"{'VM flow s':>11}{'overhead/VM s':>15}{'API/VM':>8}{'ok':>5}{'load':>12}"
          f"   CPU s/VM: dpflow server vcsim pg")
    for r in out["rows"]:
        print(f"{r['server']:<9}{r['mode']:<10}{r['at_once']:>8}{r['wall_s']:>9}"
              f"{r['vms_per_min']:>9}{r['vm_flow_s_mean']:>11}{r['overhead_per_vm_s']:>15}"
              f"{r['api_calls_per_vm']:>8}{r['completed']:>5}"
              f"{r['load_start']:>6}-{r['load_end']:<5}   "
              + " ".join(f"{v:.2f}" for v in r.get("cpu_s_per_vm", {}).values()))


if __name__ == "__main__":
    main()

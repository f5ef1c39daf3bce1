"""The night of small incrementals: N VMs, each changed by 256 KiB since its last backup,
backed up one after another (the old loop) and by backup_vms at 1, 2 and 4 backups at
once per proxy; the Prefect server on SQLite or on PostgreSQL (Debian's, started here).

Why: the nightly window is per-VM control overhead (a flow, a session, a snapshot, a
few tasks) far more than bytes. Reported per run: total wall, VMs/min, the VM flows' own
mean seconds, and the control overhead per VM = (wall x concurrency - sum of the VM
flows' own seconds) / N, i.e. the time a backup slot spends outside a VM's flow.
Run: uv run python bench/bench_night.py --vms 200 --server sqlite postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

MiB = 1 << 20


def night(dc: str, vms: list[str], mode: str) -> tuple[float, list]:
    from flows.night import backup_vms
    from flows.vm_image import backup_vm_image

    t0 = time.perf_counter()
    if mode == "loop":
        results = [backup_vm_image(dc, vm) for vm in vms]
    else:
        results = backup_vms(dc, vms)
    return time.perf_counter() - t0, results


def change(sim, vms: list[str], day: int) -> None:
    for vm in vms:
        sim.guest_write(vm, 0, (day * 256 * 1024) % (3 * MiB), bytes([day]) * (256 * 1024))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=200)
    ap.add_argument("--server", nargs="+", default=["sqlite"], choices=["sqlite", "postgres"])
    ap.add_argument("--per-proxy", nargs="+", type=int, default=[1, 2, 4])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpflow-night-"))
    for server in args.server:
        run_server(work / server, server, args.vms, args.per_proxy)


def run_server(work: Path, server: str, n: int, per_proxy: list[int]) -> None:
    from bench.postgres import Postgres
    from simulators.vcsim import Vcsim

    work.mkdir(parents=True)
    os.environ.update(DPFLOW_HOME=str(work / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    os.environ.pop("PREFECT_API_URL", None)
    pg = None
    if server == "postgres":
        pg = Postgres(work).start()
        pg.create_db("prefect")
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url("prefect")
    else:
        os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    from dpflow import prefect_server

    prefect_server.ensure_server()
    try:
        with Vcsim(work_dir=work / "vcsim") as sim:
            vms = [f"night-{i:04d}" for i in range(n)]
            for vm in vms:
                sim.create_vm(vm, [4 * MiB])
                sim.seed_disk(vm, 0, os.urandom(4 * MiB))
            os.environ.update(BENCH_VC_PASSWORD=sim.password)
            cfg = work / "dc.yaml"

            def write(per: int) -> str:
                cfg.write_text(yaml.safe_dump({
                    "vcenters": [{"name": "vcsim", "host": sim.host, "port": sim.port,
                                  "user": sim.username,
                                  "password": {"env": "BENCH_VC_PASSWORD"},
                                  "ca_file": str(sim.ca_file)}],
                    "stores": [{"name": "library", "path": "store"}],
                    "limits": {"per_proxy": per, "per_datastore": per, "per_host": per}}))
                return str(cfg)
            dc = write(4)
            wall, _ = night(dc, vms, "parallel")  # day 1: full backups, not compared
            print(f"[{server}] day 1 (full, 4 at once): {wall:.1f} s")
            rows = []
            for day, (mode, per) in enumerate([("loop", 1)] + [("parallel", p)
                                                                 for p in per_proxy], 2):
                change(sim, vms, day)
                dc = write(per)
                wall, results = night(dc, vms, mode)
                ok = sum(r.status == "completed" for r in results)
                own = [r.seconds for r in results]
                overhead = (wall * per - sum(own)) / n
                rows.append((mode, per, wall, n / wall * 60, statistics.mean(own), overhead,
                             ok))
            print(f"[{server}] {n} VMs, 256 KiB changed per VM")
            print(f"{'mode':<10}{'at once':>8}{'wall s':>9}{'VMs/min':>9}{'VM flow s':>11}"
                  f"{'overhead/VM s':>15}{'ok':>6}")
            for mode, per, wall, rate, mean, over, ok in rows:
                print(f"{mode:<10}{per:>8}{wall:>9.1f}{rate:>9.1f}{mean:>11.2f}{over:>15.2f}"
                      f"{ok:>6}")
    finally:
        prefect_server.stop_server()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()

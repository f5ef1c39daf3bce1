"""Oracle ZDB and Instant Recovery time, 1 GiB vs 16 GiB databases (sparse), side by side.

Why: Instant Recovery must be flat in database size (the array restores only the blocks
changed since the replica), and the backup-mode window must stay in seconds. Each run
makes a database double whose two datafiles fill the size (sparse LUNs on the simulated
EVA process, HTTPS), commits 200 numbered transactions, runs the real
`backup_oracle_zdb` flow while a workload keeps committing, then a second one with the
replica copied to media (the backup host reads its LUNs into the store), commits 100
more, crashes the instance, runs the real `instant_recover_oracle` flow (complete
recovery), commits 50 more, crashes again and runs `restore_oracle_from_media`; after
each recovery every acknowledged transaction is back and none else. Times are wall clock
of the flows (Prefect's per-flow and per-task cost included), on whatever load the
machine has.
Run: uv run python bench/bench_oracle.py [--sizes-gib 1 16] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import oracledb
import yaml

GiB, MiB = 1 << 30, 1 << 20
PASSWORD = "bench-pw"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}


def setup(work: Path) -> tuple[Any, str]:
    from dpflow import prefect_server
    from simulators.eva.process import EvaServer
    from simulators.oracle.client import ROOT_ENV

    os.environ["DPFLOW_HOME"] = str(work / "home")
    os.environ["PREFECT_HOME"] = str(work / "home" / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ[ROOT_ENV] = str(work / "ora")
    prefect_server.ensure_server()
    eva = EvaServer.start(work / "eva", pools={"DG1": 256 * GiB}, hosts=HOSTS)
    os.environ["BENCH_EVA_PASSWORD"], os.environ["BENCH_ORA_PASSWORD"] = eva.password, PASSWORD
    cfg = {"arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port, "user": eva.user,
                       "password": {"env": "BENCH_EVA_PASSWORD"}, "ca_file": str(eva.ca_file),
                       "backup_host": "proxy", "job_deadline_s": 600, "keep": 2,
                       "san": "https"}],
           "databases": [{"name": f"DB{n}G", "dsn": f"dbhost:1521/DB{n}G",
                          "connect": "simulators.oracle.client:connect",
                          "password": {"env": "BENCH_ORA_PASSWORD"}} for n in (1, 4, 16, 64)],
           "stores": [{"name": "library", "path": "store"}]}
    path = work / "dpflow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return eva, str(path)


def one(eva: Any, cfg: str, work: Path, gib: int) -> dict[str, Any]:
    from drivers.smis import SmisArray
    from flows.oracle import backup_oracle_zdb, instant_recover_oracle
    from flows.oracle_media import restore_oracle_from_media
    from simulators.oracle.build import create_database
    from simulators.oracle.client import connect
    from simulators.oracle.workload import Workload, committed_rows

    name = f"DB{gib}G"
    drv = SmisArray(eva.connection(timeout=60))
    for rs in drv.list_replica_sets():
        drv.delete_replica_set(rs.name)
    for p in drv.list_presentations():
        drv.unpresent(p.vdisk, p.host)
    for v in drv.list_vdisks():
        drv.delete_vdisk(v.name)
    san = {"url": eva.url, "host": "dbhost", "ca_file": str(eva.ca_file), "user": eva.user,
           "password": eva.password}
    create_database(work / "ora", name, drv, "dbhost", san, PASSWORD, [gib * GiB // 2] * 2)
    dsn = f"dbhost:1521/{name}"
    app = Workload(dsn, "sys", PASSWORD, pause_s=0.005)
    app.commit(200)
    app.start()
    zdb = backup_oracle_zdb(cfg, name, kind="snapclone")
    app.halt()
    assert app.error is None, app.error
    media = backup_oracle_zdb(cfg, name, kind="snapclone", to_media=True)

    def crash_and(recover: Any) -> tuple[Any, int]:
        conn = connect(user="sys", password=PASSWORD, dsn=dsn, mode=oracledb.AUTH_MODE_SYSDBA)
        conn.shutdown(mode=oracledb.DBSHUTDOWN_ABORT)  # the crash
        r = recover(cfg, name)
        got = [i for i, _ in committed_rows(dsn, "sys", PASSWORD)]
        assert got == app.journal.ids(), "lost or extra transactions"
        return r, len(got)

    app.commit(100)
    ir, n = crash_and(instant_recover_oracle)
    app.commit(50)
    rm, n = crash_and(restore_oracle_from_media)
    drv.close()
    return {"gib": gib, "zdb_s": zdb.seconds, "backup_mode_s": zdb.backup_mode_seconds,
            "zdb_media_s": media.seconds, "ir_s": ir.seconds, "restore_s": ir.restore_seconds,
            "media_restore_s": rm.seconds, "transactions": n, "lost": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "oracle.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-oracle-") as d:
        work = Path(d)
        eva, cfg = setup(work)
        try:
            runs = [one(eva, cfg, work, g) for _ in range(args.repeat) for g in args.sizes_gib]
        finally:
            eva.stop()
            from dpflow import prefect_server
            prefect_server.stop_server()
    med = {g: {k: statistics.median(r[k] for r in runs if r["gib"] == g)
               for k in ("zdb_s", "backup_mode_s", "zdb_media_s", "ir_s", "restore_s",
                         "media_restore_s")}
           for g in args.sizes_gib}
    print(f"{'size':>6}{'ZDB s':>8}{'backup mode s':>15}{'ZDB+media s':>13}{'IR s':>8}"
          f"{'LUN restore s':>15}{'from media s':>14}{'lost txns':>11}")
    for g, m in med.items():
        print(f"{g:>4}Gi{m['zdb_s']:>8.1f}{m['backup_mode_s']:>15.2f}{m['zdb_media_s']:>13.1f}"
              f"{m['ir_s']:>8.1f}{m['restore_s']:>15.2f}{m['media_restore_s']:>14.1f}{0:>11}")
    lo, hi = min(args.sizes_gib), max(args.sizes_gib)
    ratio = med[hi]["ir_s"] / med[lo]["ir_s"]
    print(f"IR time {hi} GiB / {lo} GiB = {ratio:.2f} (median of {args.repeat})")
    args.out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "runs": runs,
                                    "median": med, "ir_ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()

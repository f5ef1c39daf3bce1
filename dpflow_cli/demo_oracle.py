"""The Oracle part of the demo: Zero Downtime Backup under load, a lost datafile, Instant
Recovery proven transaction by transaction, then a point-in-time recovery.

The story: database ORCL runs on a VM whose datafiles, control file and online redo are
LUNs of a simulated EVA (SMI-S over HTTPS). An application keeps committing numbered
transactions while dpflow takes Zero Downtime Backups (backup mode for a moment, one
snapclone of the datafile LUNs, archived logs and a backup control file to the store).
Then the host crashes and a datafile LUN is overwritten; dpflow restores the LUNs from
the replica, recovers and opens the database: every transaction the application was
told was committed is there. Finally the database is taken back to an earlier SCN:
exactly the transactions committed up to it remain.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import oracledb
import yaml

MiB = 1 << 20
PASSWORD_ENVS = ("DPFLOW_DEMO_ORA_EVA_PASSWORD", "DPFLOW_DEMO_ORA_PASSWORD")
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}
DB, DSN, PASSWORD = "ORCL", "dbvm:1521/ORCL", "demo-oracle-pw"


def write_config(workdir: Path, eva: Any) -> str:
    cfg = {"arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port, "user": eva.user,
                       "password": {"env": PASSWORD_ENVS[0]}, "ca_file": str(eva.ca_file),
                       "backup_host": "proxy", "replica_kind": "snapclone", "keep": 2}],
           "databases": [{"name": DB, "dsn": DSN, "user": "sys",
                          "password": {"env": PASSWORD_ENVS[1]},
                          "connect": "simulators.oracle.client:connect"}],
           "stores": [{"name": "library", "path": "store"}]}
    path = workdir / "dpflow-oracle.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.environ[PASSWORD_ENVS[0]], os.environ[PASSWORD_ENVS[1]] = eva.password, PASSWORD
    return str(path)


def run_oracle_demo(workdir: Path, console: Any, datafile_mib: int = 64
                    ) -> list[tuple[str, str, str]]:
    """Run the Oracle story in `workdir` (made fresh); returns the report rows."""
    from dpflow import prefect_server
    from drivers.smis import SmisArray
    from flows.oracle import backup_oracle_zdb, instant_recover_oracle
    from simulators.eva.process import EvaServer
    from simulators.oracle.build import corrupt_datafile, create_database
    from simulators.oracle.client import ROOT_ENV, connect
    from simulators.oracle.workload import Workload, committed_rows

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    os.environ[ROOT_ENV] = str(workdir / "ora")
    rows: list[tuple[str, str, str]] = []
    t_start = time.perf_counter()
    prefect_server.ensure_server()
    with EvaServer.start(workdir / "eva", pools={"DG1": 64 * datafile_mib * MiB},
                         hosts=HOSTS) as eva:
        config = write_config(workdir, eva)
        san = {"url": eva.url, "host": "dbhost", "ca_file": str(eva.ca_file), "user": eva.user,
               "password": eva.password}
        drv = SmisArray(eva.connection())
        try:
            home = create_database(workdir / "ora", DB, drv, "dbhost", san, PASSWORD,
                                   [datafile_mib * MiB] * 2)
        finally:
            drv.close()
        rows.append(("database ORCL", "created", f"2 datafiles of {datafile_mib} MiB, control "
                     "file and online redo on their own EVA LUNs, ARCHIVELOG"))
        app = Workload(DSN, "sys", PASSWORD, pause_s=0.003)
        app.commit(50)
        app.start()
        try:
            zdbs = [backup_oracle_zdb(config, DB) for _ in range(3)]
            snap = committed_rows(DSN, "sys", PASSWORD)
            point, before_point = max(s for _, s in snap), len(snap)
            time.sleep(0.3)
        finally:
            app.halt()
        if app.error:
            raise app.error
        for z in zdbs:
            console.print(f"  ZDB {z.replica_set}: backup mode {z.backup_mode_seconds:.2f}s "
                          f"(SCN {z.begin_scn}-{z.end_scn}), {z.logs} archived log(s) + "
                          f"control file stored, {z.seconds:.1f}s"
                          + (f", rotated away {z.rotated}" if z.rotated else ""))
        rows.append(("ZDB ×3 while the application commits", "completed" if all(
            z.status == "completed" for z in zdbs) else "FAILED",
            f"backup mode at most {max(z.backup_mode_seconds or 0 for z in zdbs):.2f}s; "
            f"{app.next_id - 51} transactions committed during the backups, none refused"))
        app.commit(25)
        sysdba = connect(user="sys", password=PASSWORD, dsn=DSN, mode=oracledb.AUTH_MODE_SYSDBA)
        sysdba.shutdown(mode=oracledb.DBSHUTDOWN_ABORT)
        lost = corrupt_datafile(home, 2)
        console.print(f"dbvm crashed and datafile 2 ({lost}) was overwritten on its LUN")
        ir = instant_recover_oracle(config, DB)
        got = [i for i, _ in committed_rows(DSN, "sys", PASSWORD)]
        whole = got == app.journal.ids()
        rows.append((f"Instant Recovery from {ir.replica_set}", "completed",
                     f"LUNs restored in {ir.restore_seconds:.1f}s, recovered and open in "
                     f"{ir.seconds:.1f}s"))
        rows.append(("every committed transaction back", "yes" if whole else "NO",
                     f"{len(got)} of {len(app.journal.ids())} acknowledged commits, none extra"))
        pit = instant_recover_oracle(config, DB, replica=zdbs[-1].replica_set, until_scn=point,
                                     shutdown_open=True)
        pit_rows = committed_rows(DSN, "sys", PASSWORD)
        exact = len(pit_rows) == before_point and all(s <= point for _, s in pit_rows)
        rows.append((f"point-in-time recovery to SCN {point}", "completed" if pit.resetlogs
                     else "FAILED", f"RESETLOGS, open at SCN {pit.scn}"))
        rows.append(("exactly the transactions up to the SCN", "yes" if exact else "NO",
                     f"{len(got)} transactions, none after SCN {point}"))
    ok = all(r[1] in ("created", "completed", "yes") for r in rows)
    rows.append(("oracle demo", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t_start:.0f}s end to end"))
    return rows

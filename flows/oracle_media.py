"""Restore an Oracle database from media when its replica is gone (rotated or lost).

restore_oracle_from_media: a ZDB whose LUN images are in the store picked → refused
while the database is open (unless told to shut it down) → shut down → the datafile
LUNs taken from their hosts → each image written back through the backup host → the
hosts get their LUNs back, on every exit path → mounted → recovered (complete, or to an
SCN/time then RESETLOGS) with the archived logs on the host → opened and checked. The
same recovery as Instant Recovery; only the way the datafiles come back differs.
"""

from __future__ import annotations

import time
from datetime import datetime

from prefect import flow

from dpflow.environment import open_environment
from dpflow.errors import UserError
from dpflow.locks import exclusive
from flows.oracle_recovery import RecoverResult, point_of, recovery
from tasks.array import detach, reattach
from tasks.oracle_media import write_lun_from_media


@flow(name="restore-oracle-from-media", log_prints=True)
def restore_oracle_from_media(dc: str, db: str, version: str | None = None,
                              until_scn: int | None = None, until_time: datetime | None = None,
                              shutdown_open: bool = False, store: str | None = None
                              ) -> RecoverResult:
    """The datafile LUNs back from their images in the store, recovered, open."""
    with open_environment(dc) as env:
        import json

        from dpflow.catalog_oracle import oracle_backup

        t0 = time.perf_counter()
        db = db.upper()
        until = point_of(until_scn, until_time)
        env.dc.database(db)
        backup, rs = oracle_backup(env.catalog(), db, version, on_media=True)
        if until is not None and until[0] == "scn" and int(until[1]) < backup.end_scn:
            raise UserError(f"SCN {until[1]} is before the end of backup mode of that backup "
                            f"(SCN {backup.end_scn}): pick an older backup or a later point")
        arr, media = rs.array, str(backup.media_version_id)
        luns = sorted({f["vdisk"] for f in json.loads(backup.datafiles)})
        source = f"media version {media}"
        with exclusive("oracle", db), recovery(env, "restore-oracle-media", db, source,
                                               f"dpflow recover oracle {db} --from-media"
                                               ) as run:
            run.refuse_open(shutdown_open, "a restore")
            run.shut_down()
            drv = env.array(arr)
            held = [p for lun in luns for p in drv.list_presentations(lun)
                    if p.host != env.dc.array(arr).backup_host]
            t_restore = time.perf_counter()
            try:
                detach(env, arr, held)
                run.state = "DOWN, datafile LUNs being written from media (incomplete)"
                for lun in luns:
                    write_lun_from_media(env, arr, lun, store or backup.store, media)
            finally:
                reattach(env, arr, held)  # compensation: the hosts get their LUNs back
            restore_s = time.perf_counter() - t_restore
            point, scn = run.recover_and_open(until)
            return RecoverResult(database=db, replica_set=rs.name, version_id=backup.version_id,
                                 point=point, resetlogs=until is not None, scn=scn,
                                 seconds=time.perf_counter() - t0, restore_seconds=restore_s)

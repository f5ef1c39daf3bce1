"""Oracle Zero Downtime Backup on array replicas, and Instant Recovery from them.

backup_oracle_zdb: database checked (ARCHIVELOG, open, datafiles on array LUNs) → LUNs
checked, leftovers removed → BEGIN BACKUP → one consistency-group replica of the
datafile LUNs → END BACKUP, on every exit path → archive log current → archived logs
since the begin SCN and a backup control file into the store → optionally the replica
presented to the backup host, its LUNs read into the store, unpresented on every exit
path → one catalogued version (replica set + logs + control file + LUN images) →
rotation. A failure after the replica was made
deletes it: no replica, no version, the database out of backup mode.

instant_recover_oracle: a tracked replica picked → refused while the database is open
(unless told to shut it down) → shut down → the datafile LUNs restored from the replica
(control files and online redo kept: they are on other LUNs) → mounted → recovered
(complete, or to an SCN/time then RESETLOGS) → opened and checked. On failure the message
says which state the database is in and what to do next.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from prefect import flow
from pydantic import BaseModel

from dpflow.environment import Environment, open_environment
from dpflow.errors import TransientError, UserError, first_line
from dpflow.locks import exclusive
from drivers.protocols import ReplicaKind
from flows.oracle_recovery import RecoverResult, point_of, recovery
from tasks.array import (
    check_luns,
    create_replica_set,
    detach,
    discard_replica_set,
    fracture,
    present,
    reattach,
    remove_leftover_replicas,
    replica_name,
    report_orphan_replica,
    restore,
    rotate,
    sources_in_use,
    unpresent,
    wait_usable,
)
from tasks.catalog import close_session, open_session
from tasks.oracle import (
    archive_log_current,
    begin_backup,
    check_database,
    commit_zdb,
    end_backup,
    report_backup_mode_left,
    save_logs_and_controlfile,
)
from tasks.oracle_media import replica_to_media
from tasks.sessions import registered


class ZdbResult(BaseModel):
    database: str
    status: Literal["completed", "failed"]
    session_id: str
    version_id: str | None = None
    replica_set: str | None = None
    kind: ReplicaKind | None = None
    luns: list[str] = []
    begin_scn: int | None = None
    end_scn: int | None = None
    backup_mode_seconds: float | None = None
    logs: int = 0
    media_version_id: str | None = None
    rotated: list[str] = []
    seconds: float = 0.0
    message: str = ""


def plan_zdb(env: Environment, db: str, kind: str | None, keep: int | None, policy: str | None
          ) -> tuple[str, ReplicaKind, int, str]:
    """The replica kind, keep count and policy of a ZDB: the call's, the database's, the array's."""
    d = env.dc.database(db)
    a = env.dc.array(d.array)
    k = kind or d.replica_kind or a.replica_kind
    if k not in set(ReplicaKind):
        raise UserError(f"unknown replica kind '{k}': one of "
                        f"{', '.join(x.value for x in ReplicaKind)}")
    n = keep or d.keep or a.keep
    if not 1 <= n <= 64:
        raise UserError(f"bad --keep {n}: keep between 1 and 64 replica sets")
    p = policy or a.policy
    if p not in ("strict", "loose"):
        raise UserError(f"unknown policy '{p}': strict or loose")
    return a.name, ReplicaKind(k), n, p


@flow(name="backup-oracle-zdb", log_prints=True)
def backup_oracle_zdb(dc: str, db: str, kind: str | None = None, keep: int | None = None,
                      policy: str | None = None, store: str | None = None,
                      to_media: bool = False) -> ZdbResult:
    """A Zero Downtime Backup of database `db`: seconds in backup mode, then logs to media."""
    with open_environment(dc) as env:
        from dpflow.catalog_oracle import group_of

        t0 = time.perf_counter()
        arr, rkind, n, pol = plan_zdb(env, db, kind, keep, policy)
        db = db.upper()
        with exclusive("oracle", db):
            session_id = open_session(env, "backup-oracle-zdb", db, object_kind="oracle")
            result = ZdbResult(database=db, status="failed", session_id=session_id)
            name = replica_name(session_id)
            try:
                layout = check_database(env, db)  # bad login / NOARCHIVELOG: before the array
                result.luns = layout.luns
                check_luns(env, arr, layout.luns)
                remove_leftover_replicas(env, arr, layout.luns)
                made = None
                try:
                    result.begin_scn = begin_backup(env, db)
                    t_begin = time.perf_counter()
                    try:
                        made = create_replica_set(env, arr, name, layout.luns, rkind, pol)
                        if made.kind == ReplicaKind.MIRRORCLONE:
                            fracture(env, arr, name)
                    finally:
                        try:  # compensation: never left in backup mode
                            result.end_scn = end_backup(env, db)
                            result.backup_mode_seconds = time.perf_counter() - t_begin
                        except BaseException as exc:
                            report_backup_mode_left(db, exc)
                            raise
                    wait_usable(env, arr, name)
                    archived = archive_log_current(env, db)
                    with registered(env, store, session_id):  # prune waits for our chunks
                        logs, cf = save_logs_and_controlfile(env, db, store, result.begin_scn,
                                                             session_id)
                        media = None
                        if to_media:  # "ZDB to disk+tape": the replica's LUNs into the store
                            presented = present(env, arr, name)
                            try:
                                media = replica_to_media(env, arr, db, presented, made.replicas,
                                                         store, f"{session_id}m")["version_id"]
                            finally:
                                unpresent(env, arr, presented)  # compensation, every exit
                        result.version_id = commit_zdb(env, db, arr, session_id, made, layout,
                                                       result.begin_scn, result.end_scn,
                                                       archived, store, logs, cf, media)
                    result.media_version_id = media
                    result.logs = len(logs)
                except BaseException as exc:
                    if result.version_id is None:
                        try:  # compensation: no replica set without its version
                            discard_replica_set(env, arr, name,
                                                uncertain=isinstance(exc, TransientError))
                        except Exception as orphan:  # noqa: BLE001 - reported, original raised
                            report_orphan_replica(arr, name, orphan)
                    raise
                result.replica_set, result.kind = made.name, made.kind
                try:
                    result.rotated = rotate(env, arr, group_of(db), n)
                except Exception as exc:  # noqa: BLE001 - the new version stands
                    result.message = f"rotation failed: {first_line(exc)}"
                result.status = "completed"
                return result
            except BaseException as exc:
                result.message = first_line(exc)
                raise
            finally:
                result.seconds = time.perf_counter() - t0
                close_session(env, session_id, result.status, result.message)


@flow(name="instant-recover-oracle", log_prints=True)
def instant_recover_oracle(dc: str, db: str, replica: str | None = None,
                           until_scn: int | None = None, until_time: datetime | None = None,
                           shutdown_open: bool = False) -> RecoverResult:
    """Instant Recovery: the datafile LUNs back to a replica, recovered, open."""
    with open_environment(dc) as env:
        from dpflow.catalog_oracle import oracle_backup

        t0 = time.perf_counter()
        db = db.upper()
        until = point_of(until_scn, until_time)
        env.dc.database(db)
        backup, rs = oracle_backup(env.catalog(), db, replica)
        if until is not None and until[0] == "scn" and int(until[1]) < backup.end_scn:
            raise UserError(f"SCN {until[1]} is before the end of backup mode of replica {rs.name} "
                            f"(SCN {backup.end_scn}): pick an older replica or a later point")
        if until is not None and until[0] == "time" and until[1] <= backup.version.created.replace(
                tzinfo=None) and until[1].tzinfo is None:
            raise UserError(f"{until[1]} is before replica {rs.name} was taken "
                            f"({backup.version.created:%Y-%m-%d %H:%M:%S}): pick an older replica")
        arr, name = rs.array, rs.name
        with exclusive("oracle", db), recovery(env, "recover-oracle", db, f"replica {name}",
                                               f"dpflow recover oracle {db} --replica {name}"
                                               ) as run:
            run.refuse_open(shutdown_open, "Instant Recovery")
            wait_usable(env, arr, name)
            run.shut_down()
            held = sources_in_use(env, arr, name, True)
            t_restore = time.perf_counter()
            try:
                detach(env, arr, held)
                run.state = "DOWN, datafile LUNs being restored"
                restore(env, arr, name)
            finally:
                reattach(env, arr, held)  # compensation: the host gets its LUNs back
            restore_s = time.perf_counter() - t_restore
            point, scn = run.recover_and_open(until)
            return RecoverResult(database=db, replica_set=name, version_id=backup.version_id,
                                 point=point, resetlogs=until is not None, scn=scn,
                                 seconds=time.perf_counter() - t0, restore_seconds=restore_s)

"""Oracle steps of the ZDB and recovery paths. Each asks the flow's Environment for its driver.

Backup mode has its compensation here, called by the flow where it can be seen:
`end_backup` after `begin_backup` on every exit path; it is idempotent (no file in
backup mode is fine), so its retries after a dropped connection are safe, as are those
of `begin_backup` (a file already in backup mode from the attempt whose answer was lost
counts as begun).
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event
from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import UserError
from drivers.oracle_protocol import DatabaseInfo, OraPermanent, Until
from tasks.common import step

DEVICE = re.compile(r"wwn-0x([0-9a-fA-F]+)")
PIECE = 4 << 20


class DatabaseLayout(BaseModel):
    """Where a database lives: its datafiles' LUNs, and those of its logs."""

    info: DatabaseInfo
    datafiles: list[dict[str, Any]]  # file_no, name, tablespace, size_bytes, vdisk
    luns: list[str]  # the datafile LUNs: one consistency group
    log_luns: list[str]  # control file and online redo LUNs


def _wwn(text: str) -> str:
    return re.sub(r"[^0-9a-f]", "", text.lower())


@step(name="check database")
def check_database(env: Environment, db: str) -> DatabaseLayout:
    """Connect, refuse what ZDB cannot protect, map every datafile to its array LUN.

    Refused (UserError, before the array is touched): NOARCHIVELOG mode, a database not
    open, a datafile not on an array LUN, a datafile LUN that is not an RDM disk of the
    database's VM (when the VM is configured), control file or online redo on a datafile
    LUN (unless the database is configured to include them).
    """
    conf = env.dc.database(db)
    ora = env.database(db)
    info = ora.check()
    if info.log_mode != "ARCHIVELOG":
        raise UserError(f"database {info.name} is in NOARCHIVELOG mode: an online backup is "
                        f"impossible; switch it to ARCHIVELOG mode (ALTER DATABASE ARCHIVELOG "
                        f"while mounted) first")
    if info.status != "OPEN":
        raise UserError(f"database {info.name} is {info.status}, not open: a Zero Downtime "
                        f"Backup needs it open")
    by_wwn = {_wwn(v.wwn): v.name for v in env.array(conf.array).list_vdisks()}

    def lun_of(path: str, what: str) -> str:
        m = DEVICE.search(path)
        if m is None or _wwn(m.group(1)) not in by_wwn:
            raise UserError(f"{what} {path} of database {info.name} is not on a LUN of array "
                            f"{env.dc.array(conf.array).name} (a VMDK or a local disk?): "
                            f"Zero Downtime Backup needs datafiles on array LUNs (RDM)")
        return by_wwn[_wwn(m.group(1))]

    files = [dict(f.model_dump(), vdisk=lun_of(f.name, "datafile")) for f in ora.datafiles()]
    luns = sorted({f["vdisk"] for f in files})
    if conf.vm:
        _check_rdms(env, conf.vm, info.name, luns, {v: w for w, v in by_wwn.items()})
    logs = [lun_of(n, "control file") for n in ora.controlfiles()]
    logs += [lun_of(m, "online redo log") for g in ora.redo_groups() for m in g.members]
    shared = sorted(set(logs) & set(luns))
    if shared and not conf.include_log_luns:
        raise UserError(f"control file or online redo of {info.name} share LUN(s) "
                        f"{', '.join(shared)} with datafiles: a restore would roll them back "
                        f"and lose committed work; move them to their own LUNs, or set "
                        f"include_log_luns: true for this database")
    return DatabaseLayout(info=info, datafiles=files, luns=luns,
                          log_luns=sorted(set(logs) - set(luns)))


def _check_rdms(env: Any, vm: str, db: str, luns: list[str], wwn_of: dict[str, str]) -> None:
    """Every datafile LUN is a pass-through RDM disk of the database's VM."""
    vc, info = env.locate_vm(vm)
    rdms = {_wwn(r.wwn) for r in env.hypervisor(vc).raw_disks(info)}
    missing = [lun for lun in luns if wwn_of[lun] not in rdms]
    if missing:
        raise UserError(f"datafile LUN(s) {', '.join(missing)} of {db} are not RDM disks of VM "
                        f"{vm}: Zero Downtime Backup needs the datafiles on pass-through RDMs "
                        f"(the VM has {len(rdms)} RDM disk(s)); check the VM's disks")


@step(name="begin backup", retries=3, delay=1.0)
def begin_backup(env: Environment, db: str) -> int:
    """ALTER DATABASE BEGIN BACKUP; the SCN backup mode started at."""
    ora = env.database(db)
    try:
        return ora.begin_backup()
    except OraPermanent as exc:
        if exc.code != "ORA-01146":
            raise
        get_run_logger().warning("%s was already in backup mode (an earlier attempt began it)",
                                 db)
        return min(b.change for b in ora.backup_status() if b.status == "ACTIVE")


@step(name="end backup", retries=5, delay=1.0)
def end_backup(env: Environment, db: str) -> int:
    """Compensation of `begin_backup`, on every exit path: out of backup mode."""
    ora = env.database(db)
    try:
        return ora.end_backup()
    except OraPermanent as exc:
        if exc.code != "ORA-01142":  # none in backup mode: done already
            raise
        return ora.check().current_scn


def report_backup_mode_left(db: str, error: BaseException) -> None:
    """Never silent: a database left in backup mode logs an error and emits an event."""
    get_run_logger().error("DATABASE %s MAY BE LEFT IN BACKUP MODE: END BACKUP failed: %s; run "
                           "ALTER DATABASE END BACKUP on it now", db, error)
    emit_event(event="dpflow.oracle.backup_mode_left",
               resource={"prefect.resource.id": f"dpflow.oracle.{db}"})


@step(name="archive current log", retries=3)
def archive_log_current(env: Environment, db: str) -> int:
    return env.database(db).archive_log_current()


@step(name="archived logs and control file to the store", retries=2)
def save_logs_and_controlfile(env: Environment, db: str, store: str | None, since_scn: int,
                              tag: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Archived logs holding redo after `since_scn`, and a fresh backup control file,
    read on the database host and written into the store (chunks durable on return)."""
    ora = env.database(db)
    st = env.store(store, create=True)  # a backup: the first one creates the store
    logs = []
    for log in ora.archived_logs(since_scn):
        logs.append(dict(log.model_dump(mode="json"), **_copy(st, ora.read_host_file(log.name))))
    path = f"{env.dc.database(db).backup_dir.rstrip('/')}/{db.upper()}_{tag}.ctl"
    ora.backup_controlfile(path)
    cf = dict(name=path, **_copy(st, ora.read_host_file(path)))
    st.flush()
    return logs, cf


def _copy(st: Any, pieces: Any) -> dict[str, Any]:
    """A stream of bytes into fixed pieces of the store (content-addressed, deduplicated)."""
    chunks: list[dict[str, Any]] = []
    buf = bytearray()
    for data in pieces:
        buf += data
        while len(buf) >= PIECE:
            chunks.append(_put(st, bytes(buf[:PIECE])))
            del buf[:PIECE]
    if buf:
        chunks.append(_put(st, bytes(buf)))
    return {"size": sum(c["size"] for c in chunks), "chunks": chunks}


def _put(st: Any, data: bytes) -> dict[str, Any]:
    cid = st.chunk_id(data)
    st.put(cid, data)
    return {"id": cid, "size": len(data)}


# ---- recovery ------------------------------------------------------------------------
@step(name="read database state", retries=3)
def database_state(env: Environment, db: str) -> str:
    """OPEN, MOUNTED, STARTED or DOWN (the instance is not running)."""
    ora = env.database(db)
    try:
        return ora.check().status
    except OraPermanent as exc:
        if exc.code == "ORA-01034":
            return "DOWN"
        if exc.code == "ORA-01507":
            return "STARTED"
        raise


@step(name="shut database down", retries=2)
def shutdown(env: Environment, db: str) -> None:
    """Immediate; a database left in backup mode (ORA-01149) is ended first."""
    ora = env.database(db)
    try:
        ora.shutdown()
    except OraPermanent as exc:
        if exc.code != "ORA-01149":
            raise
        get_run_logger().warning("%s was in backup mode: ending it before the shutdown", db)
        ora.end_backup()
        ora.shutdown()


@step(name="start database mounted", retries=2)
def startup_mount(env: Environment, db: str) -> None:
    env.database(db).startup_mount()


@step(name="recover database", retries=0)
def recover(env: Environment, db: str, until: Until | None) -> None:
    env.database(db).recover(until)


@step(name="open database", retries=1)
def open_database(env: Environment, db: str, resetlogs: bool) -> DatabaseInfo:
    ora = env.database(db)
    ora.open(resetlogs=resetlogs)
    left = ora.recover_files()
    if left:
        raise UserError(f"database {db} opened but file(s) "
                        f"{', '.join(str(f.file_no) for f in left)} still need recovery")
    return ora.check()


@step(name="commit ZDB session", retries=3)
def commit_zdb(env: Environment, db: str, array: str, session_id: str, made: Any,
               layout: DatabaseLayout, begin_scn: int, end_scn: int, archived_scn: int,
               store: str | None, logs: list[dict[str, Any]], cf: dict[str, Any],
               media_version_id: str | None = None) -> str:
    """Replica set, logs and control file become one catalogued version, at once."""
    from datetime import UTC, datetime

    from dpflow.catalog_oracle import commit_oracle_backup
    size = {f["vdisk"]: 0 for f in layout.datafiles}
    for v in env.array(array).list_vdisks():
        if v.name in size:
            size[v.name] = v.size_bytes
    commit_oracle_backup(
        env.catalog(), version_id=session_id, session_id=session_id, database=db, array=array,
        replica_set=made.name, kind=made.kind.value, requested_kind=made.requested_kind.value,
        created=datetime.now(UTC), begin_scn=begin_scn, end_scn=end_scn,
        archived_scn=archived_scn, resetlogs_scn=layout.info.resetlogs_scn,
        store=env.dc.store(store).name, logs=logs, controlfile=cf,
        datafiles=[{k: f[k] for k in ("file_no", "name", "vdisk")} for f in layout.datafiles],
        members=[{"source": r["source"], "target": r["target"], "size_bytes": size[r["source"]]}
                 for r in made.replicas],
        note=made.note or f"Oracle ZDB of {db.upper()}: backup mode SCN {begin_scn}-{end_scn}",
        media_version_id=media_version_id)
    return session_id

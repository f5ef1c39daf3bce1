"""The double's connection factory: `connect()` returns a DB-API connection to the instance.

It stands where `oracledb.connect` stands (the driver is handed one or the other), and
answers the statements the driver and the workload send, each matched whole, so SQL the
double does not know fails as an unknown statement would (ORA-00900), never silently.

The "listener": the DSN's service name is a directory under DPFLOW_ORACLE_SIM_ROOT.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import oracledb
import oracledb.errors as _oe

from simulators.oracle.errors import ora
from simulators.oracle.instance import Instance
from simulators.oracle.recovery import open_db, recover

ROOT_ENV = "DPFLOW_ORACLE_SIM_ROOT"
Q = r"'([^']*)'"


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


class BFile:
    """A BFILE locator: a file on the database host, read by 1-based offsets."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path, self.shown = path, shown

    def _check(self) -> None:
        if not self.path.is_file():
            raise ora(22288, more=[f"ORA-27037: unable to obtain file status ({self.shown})"])

    def size(self) -> int:
        self._check()
        return self.path.stat().st_size

    def read(self, offset: int = 1, amount: int | None = None) -> bytes:
        self._check()
        with open(self.path, "rb") as f:
            f.seek(offset - 1)
            return f.read(amount if amount is not None else -1)


def _views(i: Instance, sql: str, binds: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    """The v$ views, as the driver reads them."""
    u = sql.upper()
    if u == "SELECT STATUS FROM V$INSTANCE":
        if i.status == "SHUTDOWN":
            raise ora(1034)
        return [(i.status,)]
    if u == "SELECT NAME FROM V$CONTROLFILE":
        i.need("STARTED", "MOUNTED", "OPEN")
        return [(n,) for n in i.site["controlfiles"]]
    if "FROM V$" not in u:
        return None
    i.need("MOUNTED", "OPEN")
    cf = i.cf
    if u == "SELECT CURRENT_SCN FROM V$DATABASE":
        return [(i.st["scn"],)]
    if u.startswith("SELECT NAME, DBID, LOG_MODE, OPEN_MODE, CURRENT_SCN, CONTROLFILE_TYPE, "
                    "RESETLOGS_CHANGE# FROM V$DATABASE"):
        mode = "READ WRITE" if i.status == "OPEN" else "MOUNTED"
        return [(cf["db_name"], cf["dbid"], cf["log_mode"], mode, i.st["scn"], cf["type"],
                 cf["resetlogs_scn"])]
    if u.startswith("SELECT D.FILE#, D.NAME, T.NAME, D.BYTES FROM V$DATAFILE D JOIN "
                    "V$TABLESPACE T ON T.TS# = D.TS#"):
        return [(f["file"], f["name"], f["ts"], f["size"]) for f in cf["files"]]
    if u.startswith("SELECT L.GROUP#, L.SEQUENCE#, L.STATUS, L.FIRST_CHANGE#, F.MEMBER FROM "
                    "V$LOG L JOIN V$LOGFILE F ON F.GROUP# = L.GROUP#"):
        return [(g["group"], g["seq"], g["status"], g["first"], g["member"]) for g in cf["redo"]]
    if u == "SELECT FILE#, STATUS, CHANGE# FROM V$BACKUP ORDER BY FILE#":
        return [(f["file"], "ACTIVE" if f["backup"] else "NOT ACTIVE", f["backup"])
                for f in cf["files"]]
    if u == "SELECT FILE#, ERROR, CHANGE# FROM V$RECOVER_FILE ORDER BY FILE#":
        out = []
        for f in cf["files"]:
            try:
                h = i.head(f["file"])
            except oracledb.DatabaseError:
                out.append((f["file"], "FILE NOT FOUND", 0))
                continue
            if h["ckpt"] < f["ckpt"] or h["backup"]:
                out.append((f["file"], None, h["ckpt"]))
        return out
    if u.startswith("SELECT SEQUENCE#, FIRST_CHANGE#, NEXT_CHANGE#, FIRST_TIME, NEXT_TIME, "
                    "NAME, RESETLOGS_CHANGE# FROM V$ARCHIVED_LOG WHERE NEXT_CHANGE# > :SCN"):
        return [(a["seq"], a["first"], a["next"], _dt(a["first_time"]), _dt(a["next_time"]),
                 a["name"], a["resetlogs"]) for a in cf["archived"]
                if a["next"] > int(binds["scn"]) and a["resetlogs"] == cf["resetlogs_scn"]]
    raise ora(942)


def _recover(i: Instance, sql: str) -> None:
    m = re.fullmatch(r"ALTER DATABASE RECOVER AUTOMATIC DATABASE( USING BACKUP CONTROLFILE)?"
                     r"(?: UNTIL (CANCEL|CHANGE (\d+)|TIME '([^']+)'))?", sql, re.I)
    if m is None:
        raise ora(900)
    until: tuple[str, Any] | None = None
    if m.group(2):
        if m.group(3):
            until = ("scn", int(m.group(3)))
        elif m.group(4):
            until = ("time", datetime.strptime(m.group(4), "%Y-%m-%d:%H:%M:%S"))
        else:
            until = ("cancel", None)
    recover(i, until, bool(m.group(1)))


def _statement(i: Instance, conn: SimConnection, sql: str, binds: dict[str, Any]
               ) -> list[tuple[Any, ...]] | None:
    u = sql.upper()
    simple: dict[str, Callable[[], None]] = {
        "ALTER DATABASE BEGIN BACKUP": i.begin_backup,
        "ALTER DATABASE END BACKUP": i.end_backup,
        "ALTER SYSTEM CHECKPOINT": lambda: i.checkpoint(i.next_scn()),
        "ALTER DATABASE MOUNT": i.mount,
        "ALTER DATABASE OPEN": lambda: open_db(i, False),
        "ALTER DATABASE OPEN RESETLOGS": lambda: open_db(i, True),
        "ALTER DATABASE CLOSE NORMAL": i.close_db,
        "ALTER DATABASE DISMOUNT": i.dismount,
    }
    if u in simple:
        simple[u]()
        return None
    if u == "ALTER SYSTEM ARCHIVE LOG CURRENT":
        i.need("OPEN")
        if i.cf["log_mode"] != "ARCHIVELOG":
            raise ora(258)
        i.switch_log()
        return None
    if u.startswith("ALTER DATABASE RECOVER"):
        _recover(i, sql)
        return None
    if m := re.fullmatch(r"ALTER DATABASE BACKUP CONTROLFILE TO " + Q + "( REUSE)?", sql, re.I):
        i.backup_controlfile(m.group(1))
        return None
    if m := re.fullmatch(r"CREATE OR REPLACE DIRECTORY (\w+) AS " + Q, sql, re.I):
        i.need("OPEN", "MOUNTED")
        i.st.setdefault("directories", {})[m.group(1).upper()] = m.group(2)
        return None
    if u == "SELECT BFILENAME(:D, :N) FROM DUAL":
        folder = i.st.get("directories", {}).get(str(binds["d"]).upper())
        if folder is None:
            raise ora(22288, more=["ORA-22285: non-existent directory or file for FILEOPEN"])
        shown = f"{folder.rstrip('/')}/{binds['n']}"
        return [(BFile(i.media.host_path(shown), shown),)]
    if m := re.fullmatch(r"INSERT INTO DPFLOW_TXN \(ID\) VALUES \(:ID\)", sql, re.I):
        i.need("OPEN")
        conn.pending.append(int(binds["id"]))
        return None
    if u == "SELECT ID, SCN FROM DPFLOW_TXN ORDER BY ID":
        return list(i.rows())
    if u in ("ALTER DATABASE ARCHIVELOG", "ALTER DATABASE NOARCHIVELOG"):
        i.need("MOUNTED")
        i.cf["log_mode"] = u.split()[-1]
        i.put_cf()
        return None
    return _views(i, sql, binds)


class SimCursor:
    def __init__(self, conn: SimConnection) -> None:
        self.conn = conn
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, parameters: Any = None, **kw: Any) -> None:
        binds = dict(parameters or {}, **kw) if not isinstance(parameters, (list, tuple)) \
            else {"id": parameters[0]}
        text = " ".join(sql.split()).rstrip(";")
        self._rows = self.conn.call(lambda i: _statement(i, self.conn, text, binds), text) or []

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def close(self) -> None:
        self._rows = []

    def __enter__(self) -> SimCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimConnection:
    """A session of the instance in `home` (SYSDBA, PRELIM or a plain user)."""

    def __init__(self, home: Path, mode: int) -> None:
        self.home, self.mode = home, mode
        self.pending: list[int] = []
        self.dead = False

    def call(self, fn: Callable[[Instance], Any], sql: str = "") -> Any:
        if self.dead:
            raise oracledb.InterfaceError(_oe._Error("DPY-1001: not connected to database"))
        with Instance.locked(self.home) as inst:
            try:
                inst.maybe_drop(sql)
            except oracledb.DatabaseError:
                self.dead = True
                raise
            if self.mode & oracledb.AUTH_MODE_PRELIM and sql:
                raise ora(1034)
            return fn(inst)

    def cursor(self) -> SimCursor:
        return SimCursor(self)

    def commit(self) -> None:
        ids, self.pending = self.pending, []
        if ids:
            self.call(lambda i: i.commit(ids), "COMMIT")

    def rollback(self) -> None:
        self.pending = []

    def shutdown(self, mode: int = 0) -> None:
        kind = {oracledb.DBSHUTDOWN_ABORT: "abort", oracledb.DBSHUTDOWN_FINAL: "final"}.get(
            mode, "immediate")
        self.call(lambda i: i.shutdown(kind), f"SHUTDOWN {kind.upper()}")

    def startup(self, force: bool = False, restrict: bool = False,
                pfile: str | None = None) -> None:
        def up(i: Instance) -> None:
            if force and i.status != "SHUTDOWN":
                i.shutdown("abort")
            i.startup()
        self.call(up)

    def ping(self) -> None:
        self.call(lambda i: None)

    def close(self) -> None:
        self.dead = True


def connect(user: str | None = None, password: str | None = None, dsn: str | None = None,
            mode: int = 0, **_: Any) -> SimConnection:
    """What `oracledb.connect` does, for a double registered under DPFLOW_ORACLE_SIM_ROOT."""
    root = os.environ.get(ROOT_ENV)
    if not root:
        raise ora(12541)
    service = (dsn or "").rsplit("/", 1)[-1]
    home = Path(root) / service.upper()
    if not service or not (home / "site.json").exists():
        raise ora(12514)
    inst = Instance(home)
    site = inst.site
    digest = hashlib.sha256((password or "").encode()).hexdigest()
    if (user or "").lower() != site["user"].lower() or digest != site["password_sha256"]:
        raise ora(1017)
    if not mode & (oracledb.AUTH_MODE_SYSDBA | oracledb.AUTH_MODE_PRELIM) \
            and inst.status != "OPEN":
        raise ora(1034)
    return SimConnection(home, mode)

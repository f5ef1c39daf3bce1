"""OracleDatabase over python-oracledb in Thin mode (no Oracle Client libraries).

Why a connection factory: production passes `oracledb.connect`; the tests and the demo
pass the database double's `connect`, which returns a DB-API connection answering the
same SQL. Everything above the factory is the code production runs.

Why an outer deadline on connect: a listener that accepts but never answers makes a Thin
connect hang for good (and blocks other threads' connects), so the connect runs in a
daemon thread and the driver gives up after `connect_timeout_s`.

Instance start and stop use python-oracledb's own API (`Connection.shutdown()`, and
`startup()` on a PRELIM_AUTH connection), which python-oracledb implements in Thick mode
only: against a real server a Thin process gets DPY-3001 there, mapped to a permanent
error saying so. Everything else is plain SQL a real server accepts.

Every oracledb error is translated here, once, keeping its ORA/DPY code and text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import oracledb

from drivers.oracle_protocol import (
    ArchivedLog,
    BackupStatus,
    DatabaseInfo,
    Datafile,
    OraPermanent,
    OraTransient,
    OraUserError,
    RecoverFile,
    RedoGroup,
    Until,
)

# codes a retry may cure: the connection or the instance went away for a moment
TRANSIENT = {"ORA-03113", "ORA-03114", "ORA-03135", "ORA-12170", "ORA-12541", "ORA-12537",
             "ORA-12547", "ORA-00060", "ORA-00054", "ORA-01033", "ORA-01089", "ORA-12528",
             "ORA-25408", "DPY-4011", "DPY-6005", "DPY-4024", "DPY-1001"}
# codes that mean the configuration is wrong: told to the user as one line
USER = {"ORA-01017": "wrong user or password for the database",
        "ORA-12514": "the listener does not know this database (check the service name)",
        "ORA-12505": "the listener does not know this SID",
        "ORA-01031": "the user lacks SYSDBA privileges (backup mode and recovery need them)",
        "ORA-28000": "the database account is locked",
        "ORA-01123": "the database is not in ARCHIVELOG mode: online backup is impossible"}
DIRECTORY = "DPFLOW_HOST_FILES"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./:+-]+$")


def enable_thin() -> None:
    """Thin mode, fixed at start (a later init_oracle_client cannot switch the process)."""
    if oracledb.is_thin_mode() is not False:
        try:
            oracledb.enable_thin_mode()
        except oracledb.Error:
            pass  # already fixed to thin by an earlier connection


def translate(exc: BaseException, what: str) -> Exception:
    """The dpflow error for an oracledb error (or a timeout) met while doing `what`."""
    if isinstance(exc, oracledb.Error) and exc.args and hasattr(exc.args[0], "full_code"):
        err = exc.args[0]
        code, text = err.full_code or "ORA-?", str(err.message).strip()
    else:
        code, text = "DPY-0000", str(exc) or type(exc).__name__
    if code in USER:
        return OraUserError(code, f"{USER[code]} ({text.splitlines()[0]})", what)
    if code in TRANSIENT:
        return OraTransient(code, text, what)
    if code == "DPY-3001":
        return OraPermanent(code, f"{text} (python-oracledb offers this in Thick mode only)",
                            what)
    return OraPermanent(code, text, what)


def _sql_path(path: str) -> str:
    """A host path quoted into DDL (DDL cannot bind): only plain path characters."""
    if not _SAFE_PATH.match(path):
        raise OraUserError("DPF-00001", f"unsafe path for SQL: {path!r}")
    return path


class OracleDriver:
    """The OracleDatabase of one database, connected AS SYSDBA through `connect`."""

    def __init__(self, dsn: str, user: str, password: str,
                 connect: Callable[..., Any] = oracledb.connect,
                 connect_timeout_s: float = 15.0) -> None:
        enable_thin()
        self.dsn, self.user, self._password = dsn, user, password
        self._connect = connect
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None
        self._lock = threading.RLock()

    # ---- plumbing -------------------------------------------------------------------
    def _open(self, mode: int) -> Any:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["conn"] = self._connect(user=self.user, password=self._password,
                                            dsn=self.dsn, mode=mode)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["exc"] = exc

        t = threading.Thread(target=run, daemon=True, name=f"oracle-connect-{self.dsn}")
        t.start()
        t.join(self.connect_timeout_s)
        if t.is_alive():
            raise OraTransient("DPY-6005", f"no answer from {self.dsn} within "
                               f"{self.connect_timeout_s:g}s", "connect")
        if "exc" in box:
            raise translate(box["exc"], f"connect to {self.dsn}")
        return box["conn"]

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is None:
                self._conn = self._open(oracledb.AUTH_MODE_SYSDBA)
            return self._conn

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is already gone
                pass

    @contextmanager
    def _cursor(self, what: str) -> Iterator[Any]:
        try:
            with self._lock:
                cur = self._connection().cursor()
                try:
                    yield cur
                finally:
                    cur.close()
        except oracledb.Error as exc:
            err = translate(exc, what)
            if isinstance(err, OraTransient):
                self._drop()  # the next call reconnects
            raise err from exc

    def _rows(self, sql: str, what: str, **binds: Any) -> list[tuple[Any, ...]]:
        with self._cursor(what) as cur:
            cur.execute(sql, binds)
            return list(cur.fetchall())

    def _do(self, sql: str, what: str) -> None:
        with self._cursor(what) as cur:
            cur.execute(sql)

    def current_scn(self) -> int:
        return int(self._rows("SELECT current_scn FROM v$database", "read SCN")[0][0])

    # ---- what is there --------------------------------------------------------------
    def check(self) -> DatabaseInfo:
        (name, dbid, log_mode, open_mode, scn, cf_type, rl), = self._rows(
            "SELECT name, dbid, log_mode, open_mode, current_scn, controlfile_type, "
            "resetlogs_change# FROM v$database", "read v$database")
        (status,), = self._rows("SELECT status FROM v$instance", "read v$instance")
        return DatabaseInfo(name=name, dbid=int(dbid), log_mode=log_mode, open_mode=open_mode,
                            status=status, current_scn=int(scn), controlfile_type=cf_type,
                            resetlogs_scn=int(rl))

    def datafiles(self) -> list[Datafile]:
        rows = self._rows("SELECT d.file#, d.name, t.name, d.bytes FROM v$datafile d "
                          "JOIN v$tablespace t ON t.ts# = d.ts# ORDER BY d.file#",
                          "list datafiles")
        return [Datafile(file_no=int(f), name=n, tablespace=t, size_bytes=int(b))
                for f, n, t, b in rows]

    def controlfiles(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM v$controlfile", "list control files")]

    def redo_groups(self) -> list[RedoGroup]:
        rows = self._rows("SELECT l.group#, l.sequence#, l.status, l.first_change#, f.member "
                          "FROM v$log l JOIN v$logfile f ON f.group# = l.group# "
                          "ORDER BY l.group#", "list online redo logs")
        groups: dict[int, RedoGroup] = {}
        for g, seq, status, first, member in rows:
            grp = groups.setdefault(int(g), RedoGroup(group=int(g), sequence=int(seq),
                                                      status=status, first_scn=int(first),
                                                      members=[]))
            grp.members.append(member)
        return list(groups.values())

    def backup_status(self) -> list[BackupStatus]:
        rows = self._rows("SELECT file#, status, change# FROM v$backup ORDER BY file#",
                          "read v$backup")
        return [BackupStatus(file_no=int(f), status=s, change=int(c)) for f, s, c in rows]

    def recover_files(self) -> list[RecoverFile]:
        rows = self._rows("SELECT file#, error, change# FROM v$recover_file ORDER BY file#",
                          "read v$recover_file")
        return [RecoverFile(file_no=int(f), error=e or "", change=int(c)) for f, e, c in rows]

    # ---- online backup ----------------------------------------------------------------
    def begin_backup(self) -> int:
        self._do("ALTER DATABASE BEGIN BACKUP", "begin backup")
        return min(b.change for b in self.backup_status() if b.status == "ACTIVE")

    def end_backup(self) -> int:
        self._do("ALTER DATABASE END BACKUP", "end backup")
        return self.current_scn()

    def archive_log_current(self) -> int:
        self._do("ALTER SYSTEM ARCHIVE LOG CURRENT", "archive log current")
        return self.current_scn()

    def archived_logs(self, since_scn: int) -> list[ArchivedLog]:
        rows = self._rows(
            "SELECT sequence#, first_change#, next_change#, first_time, next_time, name, "
            "resetlogs_change# FROM v$archived_log WHERE next_change# > :scn AND "
            "resetlogs_change# = (SELECT resetlogs_change# FROM v$database) "
            "AND name IS NOT NULL ORDER BY sequence#", "list archived logs", scn=since_scn)
        return [ArchivedLog(sequence=int(s), first_scn=int(f), next_scn=int(n), first_time=ft,
                            next_time=nt, name=name, resetlogs_scn=int(rl))
                for s, f, n, ft, nt, name, rl in rows]

    def backup_controlfile(self, path: str) -> None:
        self._do(f"ALTER DATABASE BACKUP CONTROLFILE TO '{_sql_path(path)}' REUSE",
                 "backup control file")

    def read_host_file(self, path: str, chunk: int = 4 << 20) -> Iterator[bytes]:
        """Through a BFILE: a directory object over the file's directory, read in pieces."""
        folder, _, name = _sql_path(path).rpartition("/")
        self._do(f"CREATE OR REPLACE DIRECTORY {DIRECTORY} AS '{folder or '/'}'",
                 f"read {path}")
        with self._cursor(f"read {path}") as cur:
            cur.execute("SELECT BFILENAME(:d, :n) FROM dual", {"d": DIRECTORY, "n": name})
            (lob,), = cur.fetchall()
            size = lob.size()
            pos = 1  # LOB offsets are 1-based
            while pos <= size:
                data = lob.read(pos, min(chunk, size - pos + 1))
                pos += len(data)
                yield data

    # ---- instance and recovery --------------------------------------------------------
    def shutdown(self, abort: bool = False) -> None:
        try:
            status = self.check().status
        except OraPermanent as exc:
            if exc.code == "ORA-01034":  # not available: already down
                return
            raise
        with self._cursor("shutdown") as cur:
            conn = self._connection()
            if abort:
                conn.shutdown(mode=oracledb.DBSHUTDOWN_ABORT)
            else:
                conn.shutdown(mode=oracledb.DBSHUTDOWN_IMMEDIATE)
                if status == "OPEN":
                    cur.execute("ALTER DATABASE CLOSE NORMAL")
                cur.execute("ALTER DATABASE DISMOUNT")
                conn.shutdown(mode=oracledb.DBSHUTDOWN_FINAL)
        self._drop()

    def startup_mount(self) -> None:
        prelim = self._open(oracledb.AUTH_MODE_SYSDBA | oracledb.AUTH_MODE_PRELIM)
        try:
            prelim.startup()
        except oracledb.Error as exc:
            raise translate(exc, "startup") from exc
        finally:
            prelim.close()
        self._drop()
        self._do("ALTER DATABASE MOUNT", "mount")

    def recover(self, until: Until | None = None, backup_controlfile: bool = False) -> None:
        sql = "ALTER DATABASE RECOVER AUTOMATIC DATABASE"
        if backup_controlfile:
            sql += " USING BACKUP CONTROLFILE"
        if until is not None:
            kind, value = until
            if kind == "scn":
                sql += f" UNTIL CHANGE {int(value)}"  # type: ignore[arg-type]
            elif kind == "time":
                assert isinstance(value, datetime)
                if value.tzinfo is not None:  # Oracle reads it in the host's zone: UTC assumed
                    value = value.astimezone(UTC).replace(tzinfo=None)
                sql += f" UNTIL TIME '{value.strftime('%Y-%m-%d:%H:%M:%S')}'"
            else:
                sql += " UNTIL CANCEL"
        self._do(sql, "recover database")

    def open(self, resetlogs: bool = False) -> None:
        self._do("ALTER DATABASE OPEN RESETLOGS" if resetlogs else "ALTER DATABASE OPEN",
                 "open database")

    def close(self) -> None:
        self._drop()


def open_database(db: Any, password: str) -> OracleDriver:
    """The DRIVERS factory: a configured database (dpflow.config.Database); its
    connection factory is named in the config ('module:callable', oracledb's by default)."""
    import importlib

    module, _, attr = db.connect.partition(":")
    connect = getattr(importlib.import_module(module), attr or "connect")
    return OracleDriver(db.dsn, db.user, password, connect, db.connect_timeout_s)

"""The Oracle database boundary as a typed Protocol: what the ZDB and recovery flows need.

Contract (every implementation): names and SCNs are Oracle's own; every database error
arrives as one of the `OraError` classes below, which keep the ORA code and the server's
text, so a flow can say exactly what Oracle said. Transient ones (lost connection,
instance starting) are retried by the tasks; the rest are not.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from drivers.errors import PermanentError, TransientError, UserError


class OraMixin:
    """The ORA code ('ORA-01113') and the server's full text, kept from the boundary."""

    code: str = ""
    text: str = ""

    def _keep(self, code: str, text: str) -> None:
        self.code, self.text = code, text


class OraTransient(TransientError, OraMixin):
    """Worth a retry: the connection dropped, the instance is starting or busy."""

    def __init__(self, code: str, text: str, what: str = "") -> None:
        super().__init__(f"{what}: {text}" if what else text)
        self._keep(code, text)


class OraPermanent(PermanentError, OraMixin):
    """Oracle refused for good (a wrong sequence, a missing log, a corrupt file)."""

    def __init__(self, code: str, text: str, what: str = "") -> None:
        super().__init__(f"{what}: {text}" if what else text)
        self._keep(code, text)


class OraUserError(UserError, OraMixin):
    """The configuration is wrong: credentials, unknown database, privileges, log mode."""

    def __init__(self, code: str, text: str, what: str = "") -> None:
        super().__init__(f"{what}: {text}" if what else text)
        self._keep(code, text)


class DatabaseInfo(BaseModel):
    name: str
    dbid: int
    log_mode: str  # ARCHIVELOG | NOARCHIVELOG
    open_mode: str  # READ WRITE | MOUNTED | ...
    status: str  # v$instance: STARTED | MOUNTED | OPEN
    current_scn: int
    controlfile_type: str  # CURRENT | BACKUP
    resetlogs_scn: int


class Datafile(BaseModel):
    file_no: int
    name: str
    tablespace: str
    size_bytes: int


class RedoGroup(BaseModel):
    group: int
    sequence: int
    status: str
    first_scn: int
    members: list[str]


class BackupStatus(BaseModel):
    file_no: int
    status: str  # ACTIVE | NOT ACTIVE
    change: int


class ArchivedLog(BaseModel):
    sequence: int
    first_scn: int
    next_scn: int
    first_time: datetime
    next_time: datetime
    name: str
    resetlogs_scn: int


class RecoverFile(BaseModel):
    file_no: int
    error: str
    change: int


Until = (tuple[Literal["scn"], int] | tuple[Literal["time"], datetime]
         | tuple[Literal["cancel"], None])


@runtime_checkable
class OracleDatabase(Protocol):
    """One Oracle database, reached as SYSDBA (backup mode and recovery need it)."""

    def check(self) -> DatabaseInfo:
        """Connect and read v$database/v$instance; OraUserError for bad login/unknown DB."""
        ...

    def datafiles(self) -> list[Datafile]: ...

    def controlfiles(self) -> list[str]: ...

    def redo_groups(self) -> list[RedoGroup]: ...

    def backup_status(self) -> list[BackupStatus]: ...

    def begin_backup(self) -> int:
        """ALTER DATABASE BEGIN BACKUP; the SCN backup mode started at."""
        ...

    def end_backup(self) -> int:
        """ALTER DATABASE END BACKUP (files not in backup mode are fine); the SCN after."""
        ...

    def archive_log_current(self) -> int:
        """Switch and archive the current online log; the current SCN afterwards."""
        ...

    def archived_logs(self, since_scn: int) -> list[ArchivedLog]:
        """Archived logs of the current incarnation holding redo after `since_scn`."""
        ...

    def backup_controlfile(self, path: str) -> None:
        """ALTER DATABASE BACKUP CONTROLFILE TO `path` (a file on the database host)."""
        ...

    def read_host_file(self, path: str, chunk: int = 4 << 20) -> Iterator[bytes]:
        """The bytes of a file on the database host (archived log, backup control file)."""
        ...

    def recover_files(self) -> list[RecoverFile]: ...

    def shutdown(self, abort: bool = False) -> None:
        """Immediate (or abort) shutdown; an instance already down is fine."""
        ...

    def startup_mount(self) -> None: ...

    def recover(self, until: Until | None = None, backup_controlfile: bool = False) -> None:
        """Media recovery: complete (until None) or incomplete to an SCN, time or cancel."""
        ...

    def open(self, resetlogs: bool = False) -> None: ...

    def close(self) -> None: ...

"""The recovery both Oracle restores share, whatever brought the datafiles back.

Instant Recovery (from a replica) and the restore from media differ only in how the
datafile LUNs get their old contents; before that the database must be down (refused
while open unless told), after it the database is mounted, recovered and opened. A
failure anywhere says, in one line, the state the database is left in and the command
that continues: `Recovery` keeps that state current and writes it into the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import DpflowError, UserError, first_line
from drivers.oracle_protocol import OraMixin, Until
from tasks.catalog import close_session, open_session
from tasks.oracle import database_state, open_database, recover, shutdown, startup_mount


class RecoverResult(BaseModel):
    database: str
    replica_set: str
    version_id: str
    point: str  # "complete" or the SCN / time recovered to
    resetlogs: bool
    scn: int
    seconds: float
    restore_seconds: float


def point_of(until_scn: int | None, until_time: datetime | None) -> Until | None:
    if until_scn is not None and until_time is not None:
        raise UserError("give --until as an SCN or a time, not both")
    if until_scn is not None:
        return ("scn", until_scn)
    if until_time is not None:
        return ("time", until_time)
    return None


@dataclass
class Recovery:
    """One recovery session; `state` is what the database is left in if a step fails now."""

    env: Environment
    db: str
    source: str  # "replica X" or "media version Y"
    session_id: str
    state: str = "OPEN"

    def refuse_open(self, shutdown_open: bool, what: str) -> None:
        """An open database is refused unless the operator said to shut it down."""
        self.state = database_state(self.env, self.db)
        if self.state == "OPEN" and not shutdown_open:
            raise UserError(f"database {self.db} is open: {what} would replace its datafiles; "
                            f"stop the application, then run again with --shutdown (dpflow "
                            f"shuts it down first)")

    def shut_down(self) -> None:
        if self.state != "DOWN":
            shutdown(self.env, self.db)
        self.state = "DOWN"

    def recover_and_open(self, until: Until | None) -> tuple[str, int]:
        """Mount, recover (complete or to `until`, then RESETLOGS), open; the session ends."""
        src = self.source
        self.state = f"DOWN, datafiles restored from {src}"
        startup_mount(self.env, self.db)
        self.state = f"MOUNTED, datafiles restored from {src}, not recovered"
        recover(self.env, self.db, until)
        self.state = f"MOUNTED and recovered from {src}, not open"
        info = open_database(self.env, self.db, until is not None)
        point = "complete" if until is None else f"{until[0]} {until[1]}"
        close_session(self.env, self.session_id, "completed",
                      f"from {src}, recovered {point}, open at SCN {info.current_scn}")
        return point, info.current_scn


@contextmanager
def recovery(env: Environment, kind: str, db: str, source: str, again: str
             ) -> Iterator[Recovery]:
    """A recovery session; on any failure it is closed as failed with the state explained."""
    run = Recovery(env, db, source, open_session(env, kind, db, object_kind="oracle"))
    try:
        yield run
    except BaseException as exc:
        msg = explain(db, run.state, source, again, exc)
        close_session(env, run.session_id, "failed", msg)
        if msg == first_line(exc) or not isinstance(exc, DpflowError):
            raise
        raise reworded(exc, msg) from exc


def explain(db: str, state: str, source: str, again: str, exc: BaseException) -> str:
    """One line: what failed, the state the database is left in, what to do next."""
    what = first_line(exc)
    if isinstance(exc, OraMixin) and exc.code == "ORA-00308":
        return (f"recovery of {db} stopped: {exc.text.splitlines()[0]} (the archived log is "
                f"missing from the archive destination); database {db} is MOUNTED with "
                f"datafiles from {source}: put the log back, then run `{again}` again, or "
                f"recover to an earlier point with --until")
    if isinstance(exc, UserError) and state == "OPEN":
        return what
    return f"{what}; database {db} is {state}"


def reworded(exc: DpflowError, msg: str) -> DpflowError:
    """The same error class (an ORA error keeps its code and text), saying `msg`."""
    if isinstance(exc, OraMixin):
        new = type(exc)(exc.code, exc.text)  # type: ignore[call-arg]
        new.args = (msg,)
        return new
    return type(exc)(msg)

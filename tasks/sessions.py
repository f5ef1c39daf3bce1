"""The session skeleton every path shares, as context managers so a flow reads like its
path while its compensations stay visible at the `with` line.

    with session(env, "backup-image", vm) as s:      # catalog record, closed on every exit
        with registered(env, store, s.id):             # prune waits while we write chunks
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dpflow.environment import Environment
from dpflow.errors import first_line
from tasks.catalog import close_session, open_session
from tasks.maintenance import register, unregister


@dataclass
class SessionRecord:
    """What the catalog will say of this run; the flow fills it in as it goes."""

    id: str
    status: str = "failed"
    message: str = ""
    bytes_read: int = 0
    bytes_written: int = 0


@contextmanager
def session(env: Environment, kind: str, name: str,
            object_kind: str = "vm") -> Iterator[SessionRecord]:
    """A catalogued session: opened now, closed on every exit path with what the flow
    recorded (an exception marks it failed with the error's first line)."""
    record = SessionRecord(id=open_session(env, kind, name, object_kind))
    try:
        yield record
    except BaseException as exc:
        record.status, record.message = "failed", first_line(exc)
        raise
    finally:
        close_session(env, record.id, record.status, record.message, record.bytes_read,
                      record.bytes_written)


@contextmanager
def registered(env: Environment, store: str | None, session_id: str) -> Iterator[None]:
    """The session is known to the store while it writes: prune defers, no chunk vanishes."""
    register(env, store, session_id)
    try:
        yield
    finally:
        unregister(env, store, session_id)

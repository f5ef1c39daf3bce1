"""Catalog steps: sessions opened and closed, so every run leaves a record."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.runtime import flow_run

from dpflow import events
from dpflow.environment import Environment
from dpflow.errors import first_line
from tasks.common import step


@step(name="open session")
def open_session(env: Environment, kind: str, vm: str, object_kind: str = "vm") -> str:
    return env.catalog().begin_session(kind, object_kind, vm,
                                                       flow_run_id=str(flow_run.id or ""))


@step(name="close session", retries=3)
def close_session(env: Environment, session_id: str, status: str, message: str = "",
                  bytes_read: int = 0, bytes_written: int = 0) -> None:
    env.catalog().end_session(session_id, status, message, bytes_read,
                                              bytes_written)
    announce(env, session_id, status, message, bytes_read, bytes_written)


def announce(env: Environment, session_id: str, status: str, message: str, bytes_read: int,
             bytes_written: int) -> None:
    """A closed session as a dpflow event (backup/restore/replica completed, failed ...),
    with its version; an event that cannot be sent never fails the run."""
    try:
        cat = env.catalog()
        row = cat.get_session(session_id)
        attempt = int((flow_run.parameters or {}).get("attempt", 1) or 1)
        events.session_ended(row.kind, row.object.kind, row.object.name, status,
                             session_id=session_id,
                             version_id=cat.version_of_session(session_id), attempt=attempt,
                             message=message, bytes_read=bytes_read,
                             bytes_written=bytes_written)
    except Exception as exc:  # noqa: BLE001 - reported; the session's outcome stands
        get_run_logger().warning("event for session %s not sent: %s", session_id,
                                 first_line(exc))

"""Catalog steps: sessions opened and closed, so every run leaves a record."""

from __future__ import annotations

from prefect.runtime import flow_run

from dpflow.environment import Environment
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

"""Backups at once, per proxy, datastore and ESX host: Prefect global concurrency limits.

The limits live on the Prefect server, so they hold across every worker and process of
a site, and a killed session's lease expires. A backup takes one slot of each of its
three limits in one request (all or none: two backups never deadlock holding one each).
The sizes come from the data-centre file (`limits:`); a changed size is written to the
server the next time a backup asks for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dpflow.config import DataCentre
from dpflow.errors import UserError, first_line
from dpflow.locks import limit_name

_known: dict[str, int] = {}
_lock = threading.Lock()
_held: ContextVar[tuple[str, ...]] = ContextVar("dpflow_backup_slot", default=())


def proxy_name(dc: DataCentre) -> str:
    """The proxy this process backs up as: $DPFLOW_PROXY (one per worker), else the first."""
    name = os.environ.get("DPFLOW_PROXY") or dc.proxies[0].name
    if name not in {p.name for p in dc.proxies}:
        known = ", ".join(p.name for p in dc.proxies)
        raise UserError(f"unknown proxy '{name}' in DPFLOW_PROXY: the data centre defines "
                        f"{known}")
    return name


def backup_limits(dc: DataCentre, proxy: str, datastore: str, host: str) -> dict[str, int]:
    """The global concurrency limits one VM backup needs, with their sizes."""
    wanted = {limit_name("proxy", proxy): dc.limits.per_proxy,
              limit_name("datastore", datastore): dc.limits.per_datastore}
    if host:
        wanted[limit_name("host", host)] = dc.limits.per_host
    return wanted


def ensure(limits: dict[str, int]) -> None:
    """Create or resize the limits on the Prefect server (once per size per process)."""
    todo = {n: v for n, v in limits.items() if _known.get(n) != v}
    if not todo:
        return
    with _lock, get_client(sync_client=True) as client:
        for name, size in todo.items():
            try:
                have = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=size))
                except ObjectAlreadyExists as exc:  # another worker made it in between,
                    _confirm(client, name, exc)  # or the server's database refused it
            else:
                if have.limit != size or not have.active:
                    client.update_global_concurrency_limit(
                        name, GlobalConcurrencyLimitUpdate(limit=size, active=True))
            _known[name] = size


def _confirm(client: object, name: str, conflict: ObjectAlreadyExists) -> None:
    """A 409 on create means the limit exists, unless the server's database refused the
    row (a constraint or trigger maps to 409 too): then it is not there, and that is an
    error, not a limit silently missing from every backup."""
    try:
        client.read_global_concurrency_limit_by_name(name)  # type: ignore[attr-defined]
    except ObjectNotFound:
        raise UserError(f"the server refused limit {name} (409 on create, yet it does not "
                        f"exist): {_detail(conflict.http_exc)}") from None


def _detail(http_exc: Exception) -> str:
    """The API's own reason ({"detail": ...}), else the HTTP error's first line."""
    try:
        return str(http_exc.response.json()["detail"]).splitlines()[0]  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no JSON reason: say what the HTTP error says
        return first_line(http_exc)


@contextmanager
def backup_slot(dc: DataCentre, datastore: str, host: str,
                timeout_s: float = 6 * 3600) -> Iterator[list[str]]:
    """Hold one slot of this proxy's, the datastore's and the host's limit. Re-entrant:
    the VM's flow, started by backup_vms while it holds the slot, does not take another."""
    limits = backup_limits(dc, proxy_name(dc), datastore, host)
    names = sorted(limits)
    if _held.get() == tuple(names):
        yield names
        return
    ensure(limits)
    with concurrency(names, occupy=1, timeout_seconds=timeout_s, strict=True,
                     lease_duration=60):
        token = _held.set(tuple(names))
        try:
            yield names
        finally:
            _held.reset(token)

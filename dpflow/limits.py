"""Backups at once, per proxy, datastore and ESX host: Prefect global concurrency limits.

The limits live on the Prefect server, so they hold across every worker and process of
a site, and a killed session's lease expires. A backup takes one slot of each of its
three limits and its VM's lock in one request under one lease (dpflow.locks.held: all or
none, so two backups never deadlock holding one each). The sizes come from the
data-centre file (`limits:`); a changed size is written to the server the next time a
backup asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from dpflow.config import DataCentre
from dpflow.errors import UserError
from dpflow.locks import ensure, held, limit_name, lock_of

__all__ = ["backup_limits", "backup_slot", "ensure", "proxy_name"]


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


@contextmanager
def backup_slot(dc: DataCentre, vm: str, datastore: str, host: str,
                timeout_s: float = 6 * 3600) -> Iterator[list[str]]:
    """Hold one slot of this proxy's, the datastore's and the host's limit, and the VM's
    lock (no other session on it)."""
    limits = backup_limits(dc, proxy_name(dc), datastore, host) | lock_of("vm", vm)
    with held(limits, timeout_s) as names:
        yield names

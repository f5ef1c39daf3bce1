"""One session per object at a time, through Prefect global concurrency limits.

The limit lives on the Prefect server, so it holds across processes, proxies and workers
(nothing home-made), and its lease expires if a process is killed mid-session.

After a kill -9 the next session on the same object waits at most LEASE_BOUND_S: the
lease (LEASE_S, the shortest the server allows; a live holder renews it), then the
server's repossessor must notice the expiry (PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS)
and the waiting client must ask again (its retry interval is capped by
PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS, with jitter of up to
30 %). The local server dpflow starts sets both to SERVER_LOOP_S; Prefect's defaults
(15 s and 30 s) would make the bound about 115 s: on a shared Prefect server, set both
environment variables to 5 before `prefect server start` to keep LEASE_BOUND_S.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dpflow.prefect_server import SERVER_LOOP_S

LEASE_S = 60
LEASE_BOUND_S = LEASE_S + SERVER_LOOP_S + SERVER_LOOP_S * 1.3 + 5  # + request round trips


def limit_name(kind: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60]
    return f"dpflow-{kind}-{safe}-{hashlib.blake2s(name.encode(), digest_size=4).hexdigest()}"


@contextmanager
def exclusive(kind: str, name: str, timeout_s: float = 3600) -> Iterator[None]:
    """Wait until no other session holds `kind`/`name`, then hold it."""
    lname = limit_name(kind, name)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=lname,
                                                                                limit=1))
        except ObjectAlreadyExists:
            pass
    with concurrency(lname, occupy=1, timeout_seconds=timeout_s, strict=True,
                     lease_duration=LEASE_S):
        yield


def is_free(kind: str, name: str) -> bool:
    """Whether no session holds `kind`/`name` now (a killed holder's lease has expired)."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(limit_name(kind, name))
        except ObjectNotFound:
            return True
    return limit.active_slots == 0

"""One session per object at a time, through Prefect global concurrency limits.

The limit lives on the Prefect server, so it holds across processes, proxies and workers
(nothing home-made), and its lease expires if a process is killed mid-session.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists


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
    # the shortest lease the server allows: a session killed with -9 blocks the next
    # session on the same object for at most a minute
    with concurrency(lname, occupy=1, timeout_seconds=timeout_s, strict=True,
                     lease_duration=60):
        yield

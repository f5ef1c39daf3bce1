"""One session per object at a time, and so many backups at once: Prefect global
concurrency limits, taken all at once under one lease.

The limits live on the Prefect server, so they hold across processes, proxies and workers
(nothing home-made), and a lease expires if a process is killed mid-session. Within one
process a gate of the same sizes goes first: threads waiting for a slot wait here, not
by polling the server (each poll is a request, and a freed slot would wait for the next
poll), so only a holder of the local slots asks the server, which then refuses only when
another process holds them.

A transient server error (5xx, a dropped connection: an SQLite-backed server under load
answers 503) while taking the slots is retried; one while giving them back is logged,
never fails a session that did its work: the lease expires by itself within LEASE_S.
Neither does a failed lease renewal: the holder goes on, and only if renewals fail for
longer than LEASE_S can the server free its slots early.

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
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dpflow.errors import UserError, first_line
from dpflow.prefect_server import SERVER_LOOP_S

LEASE_S = 60
LEASE_BOUND_S = LEASE_S + SERVER_LOOP_S + SERVER_LOOP_S * 1.3 + 5  # + request round trips
RETRY_S = (0.5, 1, 2, 4, 8, 15, 30)  # a server too busy to answer, for about a minute

log = logging.getLogger("dpflow.locks")
_known: dict[str, int] = {}  # limits this process made or resized: name → size
_known_lock = threading.Lock()
_gate = threading.Condition()
_in_use: Counter[str] = Counter()


def limit_name(kind: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60]
    return f"dpflow-{kind}-{safe}-{hashlib.blake2s(name.encode(), digest_size=4).hexdigest()}"


def lock_of(kind: str, name: str) -> dict[str, int]:
    """The limit that makes sessions on one object exclusive."""
    return {limit_name(kind, name): 1}


def ensure(limits: dict[str, int]) -> None:
    """Create or resize the limits on the Prefect server (once per size per process; the
    night's threads start together, so one asks and the others find it done)."""
    with _known_lock:
        todo = {n: v for n, v in limits.items() if _known.get(n) != v}
        if not todo:
            return
        with get_client(sync_client=True) as client:
            for name, size in todo.items():
                _make(client, name, size)
                _known[name] = size


def _make(client: SyncPrefectClient, name: str, size: int) -> None:
    if size == 1:  # an object's lock: made once, never resized (one request)
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
        return
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


def _confirm(client: SyncPrefectClient, name: str, conflict: ObjectAlreadyExists) -> None:
    """A 409 on create means the limit exists, unless the server's database refused the
    row (a constraint or trigger maps to 409 too): then it is not there, and that is an
    error, not a limit silently missing from every backup."""
    try:
        client.read_global_concurrency_limit_by_name(name)
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
def held(limits: dict[str, int], timeout_s: float = 3600) -> Iterator[list[str]]:
    """Hold one slot of each limit (all or none: two holders never deadlock holding one
    each), waiting up to timeout_s; yields the limits' names."""
    names = sorted(limits)
    deadline = time.monotonic() + timeout_s
    ensure(limits)
    with _local_slots(limits, deadline):
        cm = _take_on_server(limits, deadline)
        try:
            yield names
        finally:
            try:
                cm.__exit__(None, None, None)
            except Exception as exc:  # noqa: BLE001 - the lease frees them within LEASE_S
                log.warning("could not give back slots of %s (%s); their lease frees them "
                            "within %s s", ", ".join(names), exc, LEASE_S)


@contextmanager
def exclusive(kind: str, name: str, timeout_s: float = 3600) -> Iterator[None]:
    """Wait until no other session holds `kind`/`name`, then hold it."""
    with held(lock_of(kind, name), timeout_s):
        yield


def is_free(kind: str, name: str) -> bool:
    """Whether no session holds `kind`/`name` now (a killed holder's lease has expired)."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(limit_name(kind, name))
        except ObjectNotFound:
            return True
    return limit.active_slots == 0


@contextmanager
def _local_slots(limits: dict[str, int], deadline: float) -> Iterator[None]:
    def free() -> bool:
        return all(_in_use[n] < size for n, size in limits.items())

    with _gate:
        if not _gate.wait_for(free, timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"no free slot of {', '.join(sorted(limits))} in time")
        _in_use.update(limits.keys())
    try:
        yield
    finally:
        with _gate:
            _in_use.subtract(limits.keys())
            _gate.notify_all()


def _take_on_server(limits: dict[str, int], deadline: float) -> AbstractContextManager[None]:
    """Prefect's context manager, entered: the slots held under a renewed lease. A limit
    this process made may be gone (the server's database replaced): made again, once."""
    names, remade = sorted(limits), False
    for pause in (*RETRY_S, None):
        cm = concurrency(names, occupy=1, strict=True, lease_duration=LEASE_S,
                         timeout_seconds=max(1.0, deadline - time.monotonic()),
                         raise_on_lease_renewal_failure=False)
        try:
            cm.__enter__()
            return cm
        except Exception as exc:
            if not remade and "must be created" in str(exc):
                remade = True
                with _known_lock:
                    for n in names:
                        _known.pop(n, None)
                ensure(limits)
                continue
            if pause is None or not _transient(exc):
                raise
            log.warning("taking slots of %s: %s; again in %s s", ", ".join(names),
                        exc, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _transient(exc: BaseException) -> bool:
    """A server too busy or briefly gone, as opposed to a refusal."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, httpx.TransportError):
        return True
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code >= 500

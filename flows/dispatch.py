"""A VM's backup sent to the work pool of its site, followed to its end, and sent to
another pool if the worker running it dies.

The VM's run is a flow run of its pool's `backup-vm-image` deployment (dpflow.pools),
started by `run_deployment` as a subflow of backup-vms. Its outcome is read from the
catalog (the session the run opened), which every proxy shares, not from Prefect's result
storage, which would have to be shared too.

A worker killed mid-backup (machine lost, kill -9) leaves its run `Running` for ever:
Prefect does not notice a dead process worker. The run's owner is known to be gone when
its session is still open in the catalog while the VM's lock is free: a live backup holds
the lock until after it closed its session, and a dead one's lease expires within
dpflow.locks.LEASE_BOUND_S. The run is then marked Crashed and the VM sent to the next
pool; its next backup removes the dead run's snapshot and aborts its session (leftovers).
A run waiting for a worker in a pool that Prefect reports without a live one (status not
READY: no worker heartbeat within Prefect's offline bound, ~90 s; or paused) for
DOWN_GRACE_S on end (a worker that is just starting heartbeats well within it) is
cancelled and the VM sent to the next pool, rather than waiting out `wait_s`; with no
pool left the VM fails with one line naming each pool and why. A run that no worker
finishes within `wait_s` is cancelled and reported failed.
"""

from __future__ import annotations

import time
from typing import cast

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, WorkPoolStatus
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed

from dpflow.catalog import Catalog
from dpflow.environment import Environment
from dpflow.errors import UserError
from dpflow.locks import is_free
from dpflow.pools import FLOW, deployment_name, pools
from flows.vm_image import BackupResult

POLL_S = 1.0  # how often a run's state is read
OWNER_CHECK_S = 10.0  # how often a running run's lock (or a waiting run's pool) is asked for
DOWN_GRACE_S = 180.0  # a waiting run's pool without a live worker this long: sent on


def back_up_on_pools(env: Environment, dc: str, vm: str, store: str | None, attempt: int,
                     pool: str, wait_s: float) -> BackupResult:
    """The VM's backup on its own pool, then on each other pool while workers die."""
    order = [pool] + [p for p in pools(env.dc) if p != pool]
    deaths: list[str] = []
    for p in order:
        result, died = run_on_pool(env.catalog(), dc, vm, store, attempt, p, wait_s)
        if result is not None:
            if deaths:
                result.message = "; ".join([*deaths, result.message]).strip("; ")
            return result
        deaths.append(died)
        get_run_logger().warning("%s: %s", vm, died)
    return BackupResult(vm=vm, status="failed", session_id="", message="; ".join(deaths))


def pool_down(client: SyncPrefectClient, pool: str) -> str:
    """'' when Prefect counts a live worker in the pool (status READY); else why not."""
    try:
        wp = client.read_work_pool(pool)
    except ObjectNotFound:
        return f"work pool '{pool}' does not exist"
    if wp.is_paused or wp.status == WorkPoolStatus.PAUSED:
        return f"work pool '{pool}' is paused (resume it: prefect work-pool resume '{pool}')"
    if wp.status != WorkPoolStatus.READY:
        return (f"work pool '{pool}' has no live worker (Prefect: {_status(wp.status)}); "
                f"start one: prefect worker start --pool '{pool}'")
    return ""


def _status(status: WorkPoolStatus | None) -> str:
    return status.value if status is not None else "no status"


def run_on_pool(catalog: Catalog, dc: str, vm: str, store: str | None, attempt: int,
                pool: str, wait_s: float) -> tuple[BackupResult | None, str]:
    """(the VM's result, '') or (None, why) when the worker running it died."""
    name = f"{FLOW}/{deployment_name(pool)}"
    try:
        run = cast(FlowRun, run_deployment(  # sync here: a FlowRun, not a coroutine
            name, timeout=0, as_subflow=True,
            parameters={"dc": dc, "vm": vm, "store": store, "attempt": attempt}))
    except ObjectNotFound:
        raise UserError(f"no deployment {name} for work pool '{pool}': create it with "
                        f"`python deployments/pools.py --dc {dc}`") from None
    deadline = time.monotonic() + wait_s
    next_check = time.monotonic() + OWNER_CHECK_S
    down_since: float | None = None
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final():
                return outcome(catalog, vm, str(run.id), state.message or state.name or ""), ""
            now = time.monotonic()
            if state is not None and state.is_running() and now >= next_check:
                next_check = now + OWNER_CHECK_S
                if owner_gone(catalog, vm, str(run.id)):
                    why = f"the worker of '{pool}' died during run {run.name}"
                    client.set_flow_run_state(run.id, Crashed(message=why), force=True)
                    return None, why
            elif state is not None and state.is_scheduled() and now >= next_check:
                next_check = now + OWNER_CHECK_S  # not picked up yet: is anyone there?
                down = pool_down(client, pool)
                down_since = (down_since or now) if down else None
                if down_since is not None and now - down_since >= DOWN_GRACE_S:
                    why = f"{down}; its run {run.name} cancelled before any worker took it"
                    client.set_flow_run_state(run.id, Cancelled(message=why), force=True)
                    return None, why
            if now > deadline:
                why = f"no worker of work pool '{pool}' finished it within {wait_s:.0f} s"
                client.set_flow_run_state(run.id, Cancelled(message=why), force=True)
                return BackupResult(vm=vm, status="failed", session_id="", message=why), ""
            time.sleep(POLL_S)


def owner_gone(catalog: Catalog, vm: str, flow_run_id: str) -> bool:
    """Its session was closed as `aborted` by another run that found its process gone,
    or it is open while the VM's lock is free (asked in that order, then the session
    again: a live run closes its session before it frees the lock)."""
    row = catalog.session_of_flow_run(flow_run_id)
    if row is not None and row.status == "aborted":
        return True
    if row is None or row.status != "running" or not is_free("vm", vm):
        return False
    row = catalog.session_of_flow_run(flow_run_id)
    return row is not None and row.status in ("running", "aborted")


def outcome(catalog: Catalog, vm: str, flow_run_id: str, state_message: str) -> BackupResult:
    """What the run's session says; a run that failed before opening one: its state."""
    row = catalog.session_of_flow_run(flow_run_id)
    if row is None:
        return BackupResult(vm=vm, status="failed", session_id="",
                            message=state_message.splitlines()[0] if state_message else "")
    status = row.status if row.status in ("completed", "skipped") else "failed"
    seconds = (row.ended - row.started).total_seconds() if row.ended else 0.0
    return BackupResult(vm=vm, status=status, session_id=row.id,
                        version_id=catalog.version_of_session(row.id),
                        bytes_read=row.bytes_read, bytes_added=row.bytes_written,
                        seconds=seconds, message=row.message)

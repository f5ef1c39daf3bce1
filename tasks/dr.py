"""Continuous Access steps of the site flows. Each asks the flow's Environment for its drivers.

Every step reads before it acts and does nothing when the array already is as asked, so
a site flow re-run after a crash continues where it stopped: LUNs already hidden stay
hidden, a group already failed over is not failed over again, presentations that exist
are kept. Arrays that cannot be reached raise TransientError (retried); refusals keep
the array's words.
"""

from __future__ import annotations

import time

from prefect import get_run_logger

from dpflow.environment import Environment
from dpflow.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import Presentation, ReplicaKind
from drivers.remote import DrGroupInfo, DrMode, DrRole, RemoteReplication
from tasks.common import capable, step

FAILBACK_GUARD_S = 900


def remote(env: Environment, array: str) -> RemoteReplication:
    return capable(env.array(array), RemoteReplication,  # type: ignore[type-abstract]
                   f"array '{array}' has no remote replication (Continuous Access) driver: "
                   "pick an SMI-S array with a remote replication licence")


@step(name="probe array", retries=0)
def reachable(env: Environment, array: str) -> bool:
    """Whether the array's management answers now (an unplanned failover expects not)."""
    try:
        remote(env, array).list_remote_arrays()
        return True
    except (TransientError, PermanentError) as exc:
        get_run_logger().warning("array %s unreachable: %s", array, exc)
        return False


@step(name="read DR group")
def read_group(env: Environment, array: str, group: str) -> DrGroupInfo:
    return remote(env, array).get_dr_group(group)


@step(name="stop host I/O (hide LUNs)", retries=3)
def hide_luns(env: Environment, array: str, hosts: list[str], vdisks: list[str]) -> list[str]:
    """Unpresent the vdisks from the site's hosts (fencing); what was hidden now."""
    drv = env.array(array)
    hidden = []
    for p in drv.list_presentations():
        if p.vdisk in vdisks and p.host in hosts:
            try:
                drv.unpresent(p.vdisk, p.host)
                hidden.append(f"{p.vdisk}@{p.host}")
            except NotFound:
                pass
    return hidden


@step(name="present LUNs to site hosts", retries=3)
def show_luns(env: Environment, array: str, hosts: list[str],
              vdisks: list[str]) -> list[Presentation]:
    """Present each vdisk read/write to each host; existing presentations are kept."""
    drv = env.array(array)
    have = {(p.vdisk, p.host): p for p in drv.list_presentations()}
    out = []
    for host in hosts:
        for v in vdisks:
            out.append(have.get((v, host)) or drv.present(v, host))
    return out


@step(name="wait for DR group in sync", retries=0)
def wait_in_sync(env: Environment, array: str, group: str, timeout_s: float,
                 poll_s: float = 0.2) -> DrGroupInfo:
    """Poll the group on `array` until nothing is left to send (or it is no longer the
    source there: a re-run after the failover)."""
    drv = remote(env, array)
    end = time.monotonic() + timeout_s
    while True:
        g = drv.get_dr_group(group)
        if g.role != DrRole.SOURCE or g.in_sync:
            return g
        if g.suspended:
            raise UserError(f"DR group '{group}' is suspended on {array}: resume it, then "
                            "run the failover again")
        if time.monotonic() > end:
            raise PermanentError(f"DR group '{group}' not in sync after {timeout_s:g}s "
                                 f"(state {g.state}, {g.log_writes} writes logged, "
                                 f"{g.pending_blocks} blocks to copy)")
        time.sleep(poll_s)


@step(name="fail over DR group", retries=2)
def failover(env: Environment, array: str, group: str) -> DrGroupInfo:
    return remote(env, array).failover_dr_group(group)


@step(name="check failback guard", retries=0)
def check_failback_guard(env: Environment, array: str, group: str) -> DrGroupInfo:
    """Refuse, before anything is hidden, a failback sooner than 15 min after a failover."""
    g = remote(env, array).get_dr_group(group)
    since = g.since_failover_s
    if since is not None and since < FAILBACK_GUARD_S and g.home != g.local_array:
        left = FAILBACK_GUARD_S - since
        raise UserError(f"DR group '{group}' failed over {since // 60} min {since % 60:02d} s "
                        f"ago: failback is allowed 15 minutes after a failover "
                        f"({left // 60} min {left % 60:02d} s left); run it again then")
    return g


@step(name="fail back DR group", retries=2)
def failback(env: Environment, array: str, group: str) -> DrGroupInfo:
    return remote(env, array).failback_dr_group(group)


@step(name="writable snapshot of the destination", retries=2)
def snapshot_destination(env: Environment, array: str, name: str, vdisks: list[str]) -> list[str]:
    """A vsnap set of the destination vdisks (idempotent by name); its target names."""
    drv = env.array(array)
    try:
        rs = drv.get_replica_set(name)
    except NotFound:
        rs = drv.create_replica_set(name, vdisks, ReplicaKind.VSNAP)
    return [r.target for r in rs.replicas]


@step(name="discard test snapshot", retries=3)
def discard_snapshot(env: Environment, array: str, name: str, hosts: list[str]) -> None:
    """Cleanup of a test failover: hide the snapshot targets, delete the set."""
    drv = env.array(array)
    try:
        rs = drv.get_replica_set(name)
    except NotFound:
        return
    targets = {r.target for r in rs.replicas}
    for p in drv.list_presentations():
        if p.vdisk in targets and p.host in hosts:
            drv.unpresent(p.vdisk, p.host)
    drv.delete_replica_set(name)


@step(name="ensure DR group", retries=2)
def ensure_group(env: Environment, array: str, group: str, vdisks: list[str], remote_array: str,
                 mode: str, failsafe: bool) -> DrGroupInfo:
    """Create the DR group as the config describes it, or return it if it exists."""
    return remote(env, array).create_dr_group(group, vdisks, remote_array, DrMode(mode),
                                                 failsafe)


@step(name="read DR groups", retries=0)
def list_groups(env: Environment, array: str) -> list[DrGroupInfo]:
    return remote(env, array).list_dr_groups()

"""Array replicas of a LUN group and the raw Instant Recovery step (Business Copy paths).

replicate: LUNs checked → leftover dpflow replica sets removed → one consistency-group
replica (loose policy: a cheaper kind when the array lacks space) → mirrorclones
fractured → presented to the backup host and unpresented, on every exit path → version
committed (its media is the array) → oldest replica sets beyond `keep` rotated away.
If anything fails after the replica set was made, it is deleted: a failed session leaves
no replica, no presentation and no version.
restore: replica set found in the catalog → refused while its sources are presented to
a host (unless the caller detaches them) → replica usable → sources restored → the
hosts get their LUNs back at the same numbers, on every exit path.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from dpflow import events
from dpflow.environment import Environment, open_environment
from dpflow.errors import TransientError, UserError, first_line
from dpflow.locks import exclusive
from drivers.protocols import ReplicaKind
from tasks.array import (
    check_luns,
    commit_replica_version,
    create_replica_set,
    detach,
    detached_note,
    discard_replica_set,
    fracture,
    give_back,
    left_detached,
    present,
    remove_leftover_replicas,
    replica_name,
    report_orphan_replica,
    restore,
    rotate,
    sources_in_use,
    unpresent,
    wait_usable,
)
from tasks.sessions import session

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")


class ReplicatePlan(BaseModel):
    """The checked parameters of a replicate: everything decided before the array is touched."""

    array: str
    group: str
    luns: list[str]
    kind: ReplicaKind
    keep: int
    policy: Literal["strict", "loose"]


class ReplicaResult(BaseModel):
    group: str
    status: Literal["completed", "failed"]
    session_id: str
    version_id: str | None = None
    replica_set: str | None = None
    kind: ReplicaKind | None = None
    requested_kind: ReplicaKind
    presented_luns: list[int] = []
    rotated: list[str] = []
    seconds: float = 0.0
    message: str = ""


class RestoreLunsResult(BaseModel):
    group: str
    version_id: str
    replica_set: str
    kind: ReplicaKind
    luns: list[str]
    detached: list[str]
    seconds: float


def plan_replicate(env: Environment, group: str, luns: list[str], kind: str | None = None,
                   keep: int | None = None, policy: str | None = None,
                   array: str | None = None) -> ReplicatePlan:
    """Bad input is one UserError line here, before any array call."""
    a = env.dc.array(array)
    if not NAME.match(group):
        raise UserError(f"bad LUN group name '{group}': letters, digits and _.:- only")
    if not luns:
        raise UserError(f"give the LUNs of group '{group}': dpflow replicate {group} LUN...")
    dup = sorted({n for n in luns if luns.count(n) > 1})
    if dup:
        raise UserError(f"LUN(s) named twice: {', '.join(dup)}")
    k = kind or a.replica_kind
    if k not in set(ReplicaKind):
        raise UserError(f"unknown replica kind '{k}': one of "
                        f"{', '.join(x.value for x in ReplicaKind)}")
    n = a.keep if keep is None else keep
    if not 1 <= n <= 64:
        raise UserError(f"bad --keep {n}: keep between 1 and 64 replica sets")
    p = policy or a.policy
    if p not in ("strict", "loose"):
        raise UserError(f"unknown policy '{p}': strict or loose")
    return ReplicatePlan(array=a.name, group=group, luns=list(luns), kind=ReplicaKind(k),
                         keep=n, policy=p)  # type: ignore[arg-type]


@flow(name="replicate-luns", log_prints=True)
def replicate_luns(dc: str, group: str, luns: list[str], kind: str | None = None,
                   keep: int | None = None, policy: str | None = None,
                   array: str | None = None) -> ReplicaResult:
    """A tracked replica set of `luns` (one point in time), rotation keeping `keep`."""
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        plan = plan_replicate(env, group, luns, kind, keep, policy, array)
        arr = plan.array
        with exclusive("lungroup", group), \
                session(env, "replicate-luns", group, object_kind="lungroup") as s:
            result = ReplicaResult(group=group, status="failed", session_id=s.id,
                                   requested_kind=plan.kind)
            name = replica_name(s.id)
            vdisks = check_luns(env, arr, plan.luns)
            remove_leftover_replicas(env, arr, plan.luns)
            try:
                made = create_replica_set(env, arr, name, plan.luns, plan.kind, plan.policy)
                if made.kind == ReplicaKind.MIRRORCLONE:
                    fracture(env, arr, name)
                presented = present(env, arr, name)
                try:
                    result.presented_luns = [p.lun for p in presented]
                    wait_usable(env, arr, name)  # a clone copied, no member broken
                finally:
                    unpresent(env, arr, presented)
                result.version_id = commit_replica_version(env, arr, s.id, group, made, vdisks)
            except BaseException as exc:
                if result.version_id is None:
                    try:  # compensation: no replica set without its version
                        discard_replica_set(env, arr, name,
                                            uncertain=isinstance(exc, TransientError))
                    except Exception as orphan:  # noqa: BLE001 - reported, original raised
                        report_orphan_replica(arr, name, orphan)
                raise
            result.replica_set, result.kind = made.name, made.kind
            result.message = made.note
            try:
                result.rotated = rotate(env, arr, group, plan.keep)
                if result.rotated:
                    events.emit("dpflow.replica.rotated", "lungroup", group, session_id=s.id,
                                rotated=result.rotated)
            except Exception as exc:  # noqa: BLE001 - the new version stands
                get_run_logger().warning("rotation of %s failed, the new version stands: %s",
                                         group, exc)
                result.message = (result.message + "; " if result.message else "") + \
                    f"rotation failed: {first_line(exc)}"
            s.status, s.message = "completed", result.message
            result.status, result.seconds = "completed", time.perf_counter() - t0
            return result


@flow(name="restore-luns-from-replica", log_prints=True)
def restore_luns_from_replica(dc: str, group: str, replica_set: str | None = None,
                              detach_hosts: bool = False) -> RestoreLunsResult:
    """Instant Recovery without an application: the group's LUNs back to a replica set."""
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        row = env.catalog().replica_set(group, replica_set)
        arr, name = row.array, row.name
        with exclusive("lungroup", group), \
                session(env, "restore-luns", group, object_kind="lungroup") as s:
            earlier, left = left_detached(env, arr, group, s.id)  # a failed restore's leftovers
            held = sources_in_use(env, arr, name, detach_hosts)
            wait_usable(env, arr, name)
            if held:
                env.catalog().note_session(s.id, detached_note(held))  # survives a kill
            try:
                detach(env, arr, held)
                restore(env, arr, name)
            finally:  # compensation: the hosts get their LUNs back (and what was left)
                give_back(env, arr, group, held + left, earlier, s.id)
            s.status, s.message = "completed", f"from replica set {name} (version {row.version_id})"
            return RestoreLunsResult(group=group, version_id=row.version_id, replica_set=name,
                                     kind=ReplicaKind(row.kind),
                                     luns=[m.source for m in row.members],
                                     detached=[f"{p.vdisk}@{p.host}" for p in held],
                                     seconds=time.perf_counter() - t0)

"""Array steps of the LUN paths (Business Copy): each asks the flow's Environment for its driver.

Every step that leaves something on the array has its compensation here, called by the
flow where it can be seen: a replica set made for a session that then fails is deleted
(`discard_replica_set`); a replica presented to the backup host is unpresented
(`unpresent`); LUNs taken from their hosts for a restore are given back (`reattach`).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.events import emit_event
from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import (
    OutOfSpace,
    Presentation,
    ReplicaKind,
    ReplicaSet,
    ReplicaState,
    VDiskInfo,
)
from tasks.common import step

REPLICA_PREFIX = "dp-"
# what a loose policy tries, in order, when the array lacks room for the requested kind
FALLBACK = {
    ReplicaKind.MIRRORCLONE: [ReplicaKind.SNAPCLONE, ReplicaKind.SNAPSHOT, ReplicaKind.VSNAP],
    ReplicaKind.SNAPCLONE: [ReplicaKind.SNAPSHOT, ReplicaKind.VSNAP],
    ReplicaKind.SNAPSHOT: [ReplicaKind.VSNAP],
    ReplicaKind.VSNAP: [],
}


class MadeReplica(BaseModel):
    """A replica set this session made, and what it had to settle for."""

    name: str
    kind: ReplicaKind
    requested_kind: ReplicaKind
    replicas: list[dict[str, str]]
    note: str = ""


def replica_name(session_id: str) -> str:
    """Short and array-safe (targets are named `<set>-<lun>` by the array)."""
    return f"{REPLICA_PREFIX}{session_id[:8]}"


@step(name="check LUNs")
def check_luns(env: Environment, array: str, luns: list[str]) -> list[VDiskInfo]:
    """Every LUN exists on the array and is a plain vdisk (read only: nothing changes)."""
    drv = env.array(array)
    known = {v.name: v for v in drv.list_vdisks()}
    missing = [n for n in luns if n not in known]
    if missing:
        raise NotFound(f"unknown LUN(s) {', '.join(missing)} on array {array}: "
                       f"the array has {', '.join(sorted(known)) or 'no virtual disks'}")
    targets = {r.target for s in drv.list_replica_sets() for r in s.replicas}
    replicas = [n for n in luns if n in targets]
    if replicas:
        raise UserError(f"{', '.join(replicas)} on array {array} is itself a replica: "
                        f"give the source LUNs")
    return [known[n] for n in luns]


@step(name="remove leftover replica sets")
def remove_leftover_replicas(env: Environment, array: str, luns: list[str]) -> list[str]:
    """dpflow replica sets of these LUNs that no catalogued version owns (a killed session)."""
    drv = env.array(array)
    owned = {r.name for r in env.catalog().replica_sets(array=array)}
    removed = []
    for rs in drv.list_replica_sets():
        if (rs.name.startswith(REPLICA_PREFIX) and rs.name not in owned
                and {r.source for r in rs.replicas} <= set(luns)):
            _delete(drv, rs)
            removed.append(rs.name)
    if removed:
        get_run_logger().warning("removed leftover replica sets of %s: %s", luns, removed)
    return removed


@step(name="create replica set", retries=2)
def create_replica_set(env: Environment, array: str, name: str, luns: list[str],
                       kind: ReplicaKind, policy: str) -> MadeReplica:
    """One consistency group replica of `luns`; a loose policy falls back when out of space.

    Idempotent by name: a retry after a timeout finds the set the array did make.
    """
    a = env.dc.array(array)
    drv = env.array(array)
    log = get_run_logger()
    try:
        rs = drv.get_replica_set(name)
        log.warning("replica set %s already exists (an earlier attempt made it)", name)
        return _made(rs, kind, "" if rs.kind == kind else
                     f"requested {kind.value}, made {rs.kind.value} (policy loose)")
    except NotFound:
        pass
    tried: list[str] = []
    for k in [kind, *(FALLBACK[kind] if policy == "loose" else [])]:
        try:
            rs = drv.create_replica_set(name, luns, k, pool=a.pool, deadline_s=a.job_deadline_s)
        except OutOfSpace as exc:
            tried.append(f"{k.value}: {exc}")
            if policy == "strict":
                raise PermanentError(f"cannot make a {k.value} of {', '.join(luns)} (policy "
                                     f"strict): {exc}") from exc
            log.warning("no room for a %s of %s, trying a cheaper kind: %s", k.value, luns, exc)
            continue
        note = "" if k == kind else (f"requested {kind.value}, made {k.value} (policy loose): "
                                     + tried[0])
        return _made(rs, kind, note)
    raise PermanentError(f"no replica kind fits on array {array} (policy loose): "
                         + "; ".join(tried))


def _made(rs: ReplicaSet, requested: ReplicaKind, note: str) -> MadeReplica:
    return MadeReplica(name=rs.name, kind=rs.kind, requested_kind=requested, note=note,
                       replicas=[{"source": r.source, "target": r.target} for r in rs.replicas])


@step(name="fracture mirrorclones", retries=2, delay=2.0)
def fracture(env: Environment, array: str, name: str) -> None:
    """A mirrorclone's point in time is its fracture."""
    drv = env.array(array)
    if any(r.state == ReplicaState.SYNCHRONIZED for r in drv.get_replica_set(name).replicas):
        drv.fracture(name, deadline_s=env.dc.array(array).job_deadline_s)


@step(name="wait until replica is usable", retries=0)
def wait_usable(env: Environment, array: str, name: str,
                timeout_s: float | None = None) -> ReplicaSet:
    """Until no member is still copying; a broken member fails the replica set."""
    drv = env.array(array)
    end = time.monotonic() + (timeout_s or env.dc.array(array).job_deadline_s)
    while True:
        rs = drv.get_replica_set(name)
        broken = [r.target for r in rs.replicas if r.state == ReplicaState.BROKEN]
        if broken:
            raise PermanentError(f"replica set {name} is broken ({', '.join(broken)}): its disk "
                                 f"group ran out of space; it holds no valid data")
        if all(r.state != ReplicaState.COPYING for r in rs.replicas):
            return rs
        if time.monotonic() > end:
            raise TransientError(f"replica set {name} still copying")
        time.sleep(0.1)


@step(name="present to backup host", retries=2)
def present(env: Environment, array: str, name: str) -> list[Presentation]:
    """Every target of the set, read-only, to the backup host: all or none."""
    drv = env.array(array)
    host = env.dc.array(array).backup_host
    done: list[Presentation] = []
    try:
        for r in drv.get_replica_set(name).replicas:
            mine = [p for p in drv.list_presentations(r.target) if p.host == host]
            done.append(mine[0] if mine else drv.present(r.target, host, read_only=True))
    except BaseException:
        for p in done:
            _unpresent_quietly(drv, p)
        raise
    return done


@step(name="unpresent from backup host", retries=4, delay=2.0)
def unpresent(env: Environment, array: str, presented: list[Presentation]) -> None:
    """Compensation of `present`: runs on every exit path; absent already is fine."""
    drv = env.array(array)
    for p in presented:
        try:
            drv.unpresent(p.vdisk, p.host)
        except NotFound:
            pass


def _unpresent_quietly(drv: object, p: Presentation) -> None:
    try:
        drv.unpresent(p.vdisk, p.host)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - best effort inside a failing step
        pass


@step(name="commit replica version", retries=3)
def commit_replica_version(env: Environment, array: str, session_id: str, group: str,
                           made: MadeReplica, luns: list[VDiskInfo]) -> str:
    """The replica set is complete on the array: one catalog transaction, it now exists."""
    size = {v.name: v.size_bytes for v in luns}
    note = made.note or "crash-consistent (no application)"
    env.catalog().commit_replica_set(
        version_id=session_id, session_id=session_id, group=group, array=array,
        name=made.name, kind=made.kind.value, requested_kind=made.requested_kind.value,
        created=datetime.now(UTC), note=note,
        members=[{"source": r["source"], "target": r["target"], "size_bytes": size[r["source"]]}
                 for r in made.replicas])
    return session_id


@step(name="delete replica set", retries=3, delay=2.0)
def discard_replica_set(env: Environment, array: str, name: str, uncertain: bool = False) -> bool:
    """Compensation of `create_replica_set`: the set goes (with any presentation of it).

    uncertain: the session ended on a timeout, so a request the provider never answered
    may still be applied; wait one request timeout first. Anything later still is removed
    by the next session of these LUNs (`remove_leftover_replicas`).
    """
    drv = env.array(array)
    if uncertain:
        time.sleep(env.dc.array(array).timeout_s)
    try:
        rs = drv.get_replica_set(name)
    except NotFound:
        return False
    _delete(drv, rs)
    return True


def _delete(drv: object, rs: ReplicaSet) -> None:
    for r in rs.replicas:
        for p in drv.list_presentations(r.target):  # type: ignore[attr-defined]
            drv.unpresent(p.vdisk, p.host)  # type: ignore[attr-defined]
    try:
        drv.delete_replica_set(rs.name)  # type: ignore[attr-defined]
    except NotFound:
        pass


def report_orphan_replica(array: str, name: str, error: BaseException) -> None:
    """Never silent: an error log, and a Prefect event automations can page on."""
    get_run_logger().error("REPLICA SET LEFT BEHIND on array %s: %s could not be deleted: %s; "
                           "the next replicate of its LUNs removes it, or delete it on the "
                           "array", array, name, error)
    emit_event(event="dpflow.replica.orphaned", resource={
        "prefect.resource.id": f"dpflow.array.{array}", "dpflow.replica_set": name})


@step(name="rotate replica sets", retries=1)
def rotate(env: Environment, array: str, group: str, keep: int) -> list[str]:
    """Delete the oldest catalogued replica sets of `group` beyond `keep`; mark them removed."""
    cat = env.catalog()
    drv = env.array(array)
    rows = cat.replica_sets(group, array=array)
    removed = []
    for row in rows[:max(0, len(rows) - keep)]:
        try:
            _delete(drv, drv.get_replica_set(row.name))
        except NotFound:
            pass  # deleted on the array by hand: the catalog follows
        cat.mark_replica_removed(row.version_id)
        removed.append(row.name)
    if removed:
        get_run_logger().info("rotation of %s (keep %d) removed %s", group, keep, removed)
    return removed


@step(name="check sources free")
def sources_in_use(env: Environment, array: str, name: str,
                   detach_hosts: bool) -> list[Presentation]:
    """The hosts holding the sources of `name`; a UserError unless they may be detached.

    dpflow never restores LUNs under a host that may be using them.
    """
    drv = env.array(array)
    sources = [r.source for r in drv.get_replica_set(name).replicas]
    held = [p for s in sources for p in drv.list_presentations(s)]
    if held and not detach_hosts:
        where = ", ".join(f"{p.vdisk} to {p.host} as LUN {p.lun}" for p in held)
        raise UserError(f"restore refused: the source LUNs are presented to a host that may be "
                        f"running on them ({where}); stop the application there, then run "
                        f"again with --detach-hosts (dpflow unpresents them, restores, and "
                        f"presents them again at the same LUN numbers)")
    return held


@step(name="detach sources from hosts", retries=2)
def detach(env: Environment, array: str, held: list[Presentation]) -> None:
    drv = env.array(array)
    for p in held:
        try:
            drv.unpresent(p.vdisk, p.host)
        except NotFound:
            pass


@step(name="give sources back to hosts", retries=4, delay=2.0)
def reattach(env: Environment, array: str, held: list[Presentation]) -> None:
    """Compensation of `detach`: the same LUN numbers as before, on every exit path."""
    drv = env.array(array)
    for p in held:
        now = [q for q in drv.list_presentations(p.vdisk) if q.host == p.host]
        if not now:
            drv.present(p.vdisk, p.host, lun=p.lun, read_only=p.read_only)


DETACHED = re.compile(r"hosts detached: \[([^\]]*)\]")
GIVEN_BACK = "given back by session "


def detached_note(held: list[Presentation]) -> str:
    """The session's record of what it takes from the hosts (kept by an abort too)."""
    return "hosts detached: [" + ", ".join(
        f"{p.vdisk}@{p.host}#{p.lun}:{'ro' if p.read_only else 'rw'}" for p in held) + "]"


def _parse_detached(message: str) -> list[Presentation]:
    m = DETACHED.search(message)
    out = []
    for item in (m.group(1).split(", ") if m and m.group(1) else []):
        vdisk, _, rest = item.rpartition("@")
        host, _, lun_mode = rest.partition("#")
        lun, _, mode = lun_mode.partition(":")
        out.append(Presentation(vdisk=vdisk, host=host, lun=int(lun), read_only=mode == "ro"))
    return out


@step(name="find LUNs left detached")
def left_detached(env: Environment, array: str, group: str, session_id: str
                  ) -> tuple[list[str], list[Presentation]]:
    """What earlier restores of `group` took from the hosts and never gave back (their
    reattach failed, or they were killed): (their sessions, presentations still missing).
    Sessions whose owner is gone are closed as aborted first (their note stays)."""
    from dpflow.leftovers import close_orphan_sessions
    from dpflow.locks import is_free

    for line in close_orphan_sessions(env.catalog(), own=session_id,
                                      held=("lungroup", group), lock_free=is_free):
        get_run_logger().warning("closed as aborted: %s", line)
    drv = env.array(array)
    sessions, missing = [], []
    for row in env.catalog().sessions_of("restore-luns", group):
        if row.status in ("completed", "running") or GIVEN_BACK in row.message:
            continue
        held = _parse_detached(row.message)
        if held:
            sessions.append(row.id)
            missing += [p for p in held if p not in missing and not any(
                q.host == p.host for q in drv.list_presentations(p.vdisk))]
    return sessions, missing


def give_back(env: Environment, array: str, group: str, held: list[Presentation],
              earlier: list[str], session_id: str) -> None:
    """reattach, and on success the earlier sessions' leftovers are marked given back; a
    failure is never silent (error log, event, and an error naming every presentation,
    which the session's record keeps for the next restore of the group)."""
    try:
        reattach(env, array, held)
    except Exception as exc:
        note = detached_note(held)
        get_run_logger().error("LUNS LEFT DETACHED from their hosts on array %s: %s: %s",
                               array, note, exc)
        emit_event(event="dpflow.luns.left_detached", resource={
            "prefect.resource.id": f"dpflow.lungroup.{group}", "dpflow.detached": note})
        raise PermanentError(f"{note} not given back ({str(exc).splitlines()[0]}); the next "
                             f"`dpflow restore luns {group}` gives them back") from exc
    for sid in earlier:
        env.catalog().note_session(sid, f"{GIVEN_BACK}{session_id}")


@step(name="restore sources from replica", retries=2, delay=2.0)
def restore(env: Environment, array: str, name: str) -> None:
    """Every source of the set back to the set's point in time (the array copies deltas)."""
    env.array(array).restore(name, deadline_s=env.dc.array(array).job_deadline_s)

"""Site failover, failback and test failover of Continuous Access DR groups.

failover_site (planned): for each DR group replicating to the site: hide its LUNs from the
source site's hosts (host I/O stops, the old source is fenced) → wait until the group is
in sync → fail over at the destination → present the LUNs read/write to the site's hosts.
failover_site (unplanned): the source site is lost: read what the destination holds →
fence the source if its array still answers → fail over → present → report per group the
writes the destination holds and, when the source can still tell, the writes lost (RPO).
failback_site: for each group whose home is the site: refuse before anything moves if the
15-minute guard is not over → wait until reverse replication is in sync → hide the LUNs
at the other site → fail back → present at home.
test_failover: a writable snapshot of each destination, presented to the site's hosts,
checked, then discarded; replication is never suspended and production LUNs are never
presented or written.
Every step reads the array first (tasks/dr.py), so a re-run after a crash continues. A
group that fails is reported and the others go on. --dry-run returns the ordered plan
without touching anything.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow
from pydantic import BaseModel

from dpflow.config import DataCentre
from dpflow.environment import Environment, open_environment
from dpflow.errors import UserError, first_line
from dpflow.sites import DrGroupSpec, Site
from drivers.remote import DrRole
from flows.site_vms import VmOutcome, bring_up, bring_up_plan, release, release_plan
from tasks import dr
from tasks import site_vms as svt


class GroupOutcome(BaseModel):
    group: str
    status: Literal["done", "already done", "failed", "planned"]
    writes_held: int | None = None  # writes the new source holds (its destination count)
    writes_lost: int | None = None  # known only while the old source can still be asked
    message: str = ""


class SiteResult(BaseModel):
    action: str
    site: str
    dry_run: bool
    plan: list[str]
    groups: list[GroupOutcome] = []
    vms: list[VmOutcome] = []
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(g.status != "failed" for g in self.groups) and \
            all(v.status == "up" for v in self.vms)


def _groups(env: Environment, site: str, which: Literal["remote", "home"],
            only: list[str] | None) -> tuple[DataCentre, list[DrGroupSpec]]:
    dc = env.dc
    dc.site(site)
    mine = [g for g in dc.dr_groups if getattr(g, which) == site]
    if only:
        unknown = sorted(set(only) - {g.name for g in mine})
        if unknown:
            raise UserError(f"unknown DR group(s) {', '.join(unknown)} for site '{site}': the "
                            f"config has {', '.join(g.name for g in mine) or 'none'} there")
        mine = [g for g in mine if g.name in only]
    if not mine:
        raise UserError(f"no DR group has site '{site}' as its {which} site: nothing to do "
                        "(see 'dr_groups:' in the config)")
    return dc, mine


def failover_plan(env: Environment, site: str, planned: bool,
                  only: list[str] | None = None) -> list[str]:
    dc, groups = _groups(env, site, "remote", only)
    plan = []
    for g in groups:
        src, dst = dc.site(g.home), dc.site(g.remote)
        luns = ", ".join(g.vdisks)
        if planned:
            plan += release_plan(g, src)
            plan += [f"{g.name}: hide {luns} from {', '.join(src.hosts)} on {src.array} "
                     f"(stop host I/O at site {src.name})",
                     f"{g.name}: wait until in sync on {src.array} (<= {g.in_sync_timeout_s:g}s)"]
        else:
            plan += [f"{g.name}: read the writes {dst.array} holds",
                     f"{g.name}: if {src.array} still answers, hide {luns} from "
                     f"{', '.join(src.hosts)} (fence site {src.name})"]
        plan += [f"{g.name}: fail over on {dst.array}",
                 f"{g.name}: present {luns} read/write to {', '.join(dst.hosts)} on {dst.array}"]
        plan += bring_up_plan(g, dst)
    return plan


@flow(name="failover-site", log_prints=True)
def failover_site(dc: str, site: str, planned: bool = True, dry_run: bool = False,
                  groups: list[str] | None = None) -> SiteResult:
    with open_environment(dc) as env:
        start = time.monotonic()
        plan = failover_plan(env, site, planned, groups)
        res = SiteResult(action="planned failover" if planned else "unplanned failover", site=site,
                         dry_run=dry_run, plan=plan)
        dcm, specs = _groups(env, site, "remote", groups)
        for g in specs:
            if dry_run:
                res.groups.append(GroupOutcome(group=g.name, status="planned"))
                continue
            src, dst = dcm.site(g.home), dcm.site(g.remote)
            try:
                out = _failover_one(env, g, src, dst, planned)
                res.groups.append(out)
                _bring_up(env, g, dst, start, res, out)
            except Exception as exc:  # noqa: BLE001 - one group's failure; the others go on
                res.groups.append(GroupOutcome(group=g.name, status="failed",
                                               message=first_line(exc)))
        res.seconds = time.monotonic() - start
        return res


def _bring_up(env: Environment, g: DrGroupSpec, site: Site, t0: float, res: SiteResult,
              out: GroupOutcome) -> None:
    """The VMs at the site that took the storage; a stop marks the group failed with both
    halves of its state (the storage's, the VMs')."""
    try:
        res.vms += bring_up(env, g, site, t0)
    except Exception as exc:  # noqa: BLE001 - reported on the group; the others go on
        out.status, out.message = "failed", f"{out.message}; {first_line(exc)}"


def _failover_one(env: Environment, g: DrGroupSpec, src: Site, dst: Site,
                  planned: bool) -> GroupOutcome:
    before = dr.read_group(env, dst.array, g.name)
    if before.role == DrRole.SOURCE and before.home != before.local_array:
        dr.show_luns(env, dst.array, dst.hosts, g.vdisks)
        return GroupOutcome(group=g.name, status="already done",
                            message=f"{g.name} was already failed over to {dst.array}")
    lost = None
    if planned:
        release(env, g, src)
        dr.hide_luns(env, src.array, src.hosts, g.vdisks)
        dr.wait_in_sync(env, src.array, g.name, g.in_sync_timeout_s)
        before = dr.read_group(env, dst.array, g.name)
        lost = 0
    elif dr.reachable(env, src.array):
        dr.hide_luns(env, src.array, src.hosts, g.vdisks)
        old = dr.read_group(env, src.array, g.name)
        if old.role == DrRole.SOURCE:
            lost = max(0, old.writes_applied - before.writes_applied)
    after = dr.failover(env, dst.array, g.name)
    dr.show_luns(env, dst.array, dst.hosts, g.vdisks)
    note = "" if lost is not None else f"{src.array} unreachable: writes lost unknown"
    if not before.in_sync and before.state == "copying":
        note = (note + "; " if note else "") + "the destination was still copying " \
            "(inconsistent) when it failed over"
    return GroupOutcome(group=g.name, status="done", writes_held=before.writes_applied,
                        writes_lost=lost, message=note or f"generation {after.generation}")


def failback_plan(env: Environment, site: str, only: list[str] | None = None) -> list[str]:
    dc, groups = _groups(env, site, "home", only)
    plan = []
    for g in groups:
        home, other = dc.site(g.home), dc.site(g.remote)
        luns = ", ".join(g.vdisks)
        plan += [f"{g.name}: refuse if failed over less than 15 minutes ago",
                 f"{g.name}: wait until reverse replication is in sync on {other.array}",
                 f"{g.name}: hide {luns} from {', '.join(other.hosts)} on {other.array}",
                 f"{g.name}: fail back to {home.array}",
                 f"{g.name}: present {luns} read/write to {', '.join(home.hosts)} on "
                 f"{home.array}"]
        plan[-4:-4] = release_plan(g, other)
        plan += bring_up_plan(g, home)
    return plan


@flow(name="failback-site", log_prints=True)
def failback_site(dc: str, site: str, dry_run: bool = False,
                  groups: list[str] | None = None) -> SiteResult:
    with open_environment(dc) as env:
        start = time.monotonic()
        res = SiteResult(action="failback", site=site, dry_run=dry_run,
                         plan=failback_plan(env, site, groups))
        dcm, specs = _groups(env, site, "home", groups)
        for g in specs:
            if dry_run:
                res.groups.append(GroupOutcome(group=g.name, status="planned"))
                continue
            home, other = dcm.site(g.home), dcm.site(g.remote)
            try:
                cur = dr.check_failback_guard(env, other.array, g.name)
                if cur.role != DrRole.SOURCE:
                    dr.show_luns(env, home.array, home.hosts, g.vdisks)
                    out = GroupOutcome(group=g.name, status="already done",
                                       message=f"{g.name} is at home on {home.array}")
                    res.groups.append(out)
                    _bring_up(env, g, home, start, res, out)
                    continue
                release(env, g, other)
                if g.vms and home.vcenter and g.datastore and \
                        svt.mounted_volume(env, home.vcenter, g.datastore):
                    release(env, g, home)  # stale since an unplanned failover
                dr.wait_in_sync(env, other.array, g.name, g.in_sync_timeout_s)
                dr.hide_luns(env, other.array, other.hosts, g.vdisks)
                after = dr.failback(env, home.array, g.name)
                dr.show_luns(env, home.array, home.hosts, g.vdisks)
                out = GroupOutcome(group=g.name, status="done", writes_lost=0,
                                   message=f"generation {after.generation}")
                res.groups.append(out)
                _bring_up(env, g, home, start, res, out)
            except Exception as exc:  # noqa: BLE001 - one group's failure; the others go on
                res.groups.append(GroupOutcome(group=g.name, status="failed",
                                               message=first_line(exc)))
        res.seconds = time.monotonic() - start
        return res


def test_failover_plan(env: Environment, site: str, only: list[str] | None = None) -> list[str]:
    dc, specs = _groups(env, site, "remote", only)
    plan = []
    for g in specs:
        d = dc.site(g.remote)
        plan += [f"{g.name}: writable snapshot test-{g.name} of {', '.join(g.vdisks)} on "
                 f"{d.array}", f"{g.name}: present it to {', '.join(d.hosts)}",
                 f"{g.name}: check replication still runs and production is not presented",
                 f"{g.name}: discard the snapshot"]
    return plan


test_failover_plan.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@flow(name="test-failover", log_prints=True)
def test_failover(dc: str, site: str, dry_run: bool = False,
                  groups: list[str] | None = None) -> SiteResult:
    with open_environment(dc) as env:
        start = time.monotonic()
        dcm, specs = _groups(env, site, "remote", groups)
        res = SiteResult(action="test failover", site=site, dry_run=dry_run,
                         plan=test_failover_plan(env, site, groups))
        for g in specs:
            if dry_run:
                res.groups.append(GroupOutcome(group=g.name, status="planned"))
                continue
            d = dcm.site(g.remote)
            name = f"test-{g.name}"
            try:
                try:
                    group = dr.read_group(env, d.array, g.name)
                    if group.role != DrRole.DESTINATION:
                        raise UserError(f"DR group '{g.name}' is the source on {d.array}: a test "
                                        "failover runs at the destination site")
                    targets = dr.snapshot_destination(env, d.array, name, g.vdisks)
                    dr.show_luns(env, d.array, d.hosts, targets)
                    msg = _check_test(env, d.array, g, group.generation)
                finally:
                    dr.discard_snapshot(env, d.array, name, d.hosts)
                res.groups.append(GroupOutcome(group=g.name, status="done",
                                               writes_held=group.writes_applied, message=msg))
            except Exception as exc:  # noqa: BLE001 - one group's failure; the others go on
                res.groups.append(GroupOutcome(group=g.name, status="failed",
                                               message=first_line(exc)))
        res.seconds = time.monotonic() - start
        return res


def _check_test(env: Environment, array: str, g: DrGroupSpec, generation: int) -> str:
    after = dr.read_group(env, array, g.name)
    if after.role != DrRole.DESTINATION or after.generation != generation or after.suspended:
        raise UserError(f"test failover changed DR group '{g.name}' (role {after.role}, "
                        f"state {after.state}): production replication was touched")
    shown = {p.vdisk for p in env.array(array).list_presentations()}
    if shown & set(g.vdisks):
        raise UserError(f"production LUN(s) {', '.join(sorted(shown & set(g.vdisks)))} are "
                        f"presented at {array} during a test failover")
    return f"snapshot checked; replication {after.state}, {after.writes_applied} writes held"

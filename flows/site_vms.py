"""The VM half of a site failover: what an administrator does at each site's vCenter.

At the site that gives the storage up (planned failover, failback): power the DR group's
VMs off (the host writes the datastore back to its LUN, so replication carries the last
bytes), unregister them and unmount the datastore, before the LUNs are hidden.
At the site that takes over, once its LUNs are presented: rescan, mount the replicated
VMFS volume by resignature, then per priority group (1 first): register each VM from its
.vmx, re-map its networks (the site's `networks:`), power it on; then wait until every VM
of the group is up (powered on, guest heartbeat green, its application probes passed
through guest operations) or failed, before the next group
starts. A VM that fails is reported with its group; the next groups start unless the DR
group says on_vm_failure: stop. An unreachable vCenter stops the bring-up with the state
said in one line; every step is idempotent, so running the flow again continues.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import PermanentError, TransientError, first_line
from dpflow.sites import DrGroupSpec, Site
from tasks import site_vms as sv


class VmOutcome(BaseModel):
    vm: str
    group: str  # the DR group
    priority: int
    status: Literal["up", "failed", "not started"]
    networks: list[str] = []
    probes: int = 0  # application probes passed
    message: str = ""
    up_at_s: float | None = None  # seconds since the flow started, when seen up


def release_plan(g: DrGroupSpec, site: Site) -> list[str]:
    if not g.vms:
        return []
    return [f"{g.name}: power off {', '.join(v.name for v in g.vms)} at site {site.name} "
            f"({site.vcenter}; the host writes {g.datastore} back to its LUN), unregister "
            f"them, unmount {g.datastore}"]


def bring_up_plan(g: DrGroupSpec, site: Site) -> list[str]:
    if not g.vms:
        return []
    plan = [f"{g.name}: rescan {site.vcenter}, mount VMFS volume {g.datastore} by resignature"]
    for p in sorted({v.priority for v in g.vms}):
        names = ", ".join(v.name for v in g.vms if v.priority == p)
        nets = ", ".join(f"{a} → {b}" for a, b in site.networks.items()) or "none"
        plan.append(f"{g.name}: priority {p}: register {names} from their .vmx, re-map "
                    f"networks ({nets}), power on, wait until up and probed")
    return plan


def release(env: Environment, g: DrGroupSpec, site: Site) -> list[str]:
    if not g.vms or site.vcenter is None or g.datastore is None:
        return []
    try:
        return sv.release_volume(env, site.vcenter, g.datastore, [v.name for v in g.vms])
    except TransientError as exc:
        raise PermanentError(f"vCenter {site.vcenter} unreachable while taking {g.name}'s VMs "
                             f"down at site {site.name} (nothing was moved): "
                             f"{first_line(exc)}") from exc


def bring_up(env: Environment, g: DrGroupSpec, site: Site, t0: float) -> list[VmOutcome]:
    """Mount, register, re-map and start the group's VMs at `site` by priority group."""
    import time

    if not g.vms or site.vcenter is None or g.datastore is None:
        return []
    vc = site.vcenter
    out: list[VmOutcome] = []
    try:
        ds = sv.mount_volume(env, vc, g.datastore)
        stop = False
        for p in sorted({v.priority for v in g.vms}):
            batch = [v for v in g.vms if v.priority == p]
            if stop:
                out += [VmOutcome(vm=v.name, group=g.name, priority=p, status="not started",
                                  message="an earlier priority group failed "
                                  "(on_vm_failure: stop)") for v in batch]
                continue
            started = []
            for v in batch:
                try:
                    sv.register_vm(env, vc, ds, v.name)
                    sv.remap_networks(env, vc, v.name, site.networks)
                    sv.power_on(env, vc, v.name)
                    started.append(v)
                except PermanentError as exc:
                    out.append(VmOutcome(vm=v.name, group=g.name, priority=p, status="failed",
                                         message=first_line(exc)))
            for v in started:
                try:
                    h = sv.wait_up(env, vc, v.name, v.up_timeout_s)
                    failed = sv.probe_vm(env, vc, v.name, v.probes) if v.probes else []
                    if failed:
                        raise PermanentError(f"VM {v.name} is up but its probes failed: "
                                             f"{'; '.join(failed)}")
                    out.append(VmOutcome(vm=v.name, group=g.name, priority=p, status="up",
                                         networks=h.networks, probes=len(v.probes),
                                         up_at_s=round(time.monotonic() - t0, 3)))
                except PermanentError as exc:
                    out.append(VmOutcome(vm=v.name, group=g.name, priority=p, status="failed",
                                         message=first_line(exc)))
            if g.on_vm_failure == "stop" and any(o.status == "failed" and o.priority == p
                                                 for o in out):
                stop = True
    except TransientError as exc:
        up = [o.vm for o in out if o.status == "up"]
        raise PermanentError(
            f"vCenter {vc} unreachable while bringing {g.name}'s VMs up at site {site.name}: "
            f"storage is failed over and presented; VMs up so far: {', '.join(up) or 'none'}; "
            f"run the failover again to continue ({first_line(exc)})") from exc
    return out

"""vCenter steps of a site failover: take a replicated datastore's VMs down at one site,
mount the volume and bring the VMs up at the other. Each asks the flow's Environment for
the site's vCenter driver.

Every step is idempotent (the driver's contract, drivers/recovery.py): a mounted volume
is found again, a registered VM is found by its .vmx, a VM already on is left on. So a
failover stopped by an unreachable vCenter continues when it is run again.
"""

from __future__ import annotations

import time

from dpflow.environment import Environment
from dpflow.errors import PermanentError, UserError
from drivers.recovery import SiteRecovery, VmHealth
from tasks.common import capable, step


def recovery(env: Environment, vcenter: str) -> SiteRecovery:
    return capable(env.hypervisor(vcenter), SiteRecovery,  # type: ignore[type-abstract]
                   f"vCenter '{vcenter}' has no recovery-site driver: pick the vSphere driver")


@step(name="take VMs down and release the datastore", retries=2)
def release_volume(env: Environment, vcenter: str, label: str, vms: list[str]) -> list[str]:
    """Power off (the host writes the datastore back to its LUN), unregister, unmount."""
    return recovery(env, vcenter).release_volume(label, vms)


@step(name="find the datastore of a volume")
def mounted_volume(env: Environment, vcenter: str, label: str) -> str | None:
    return recovery(env, vcenter).mounted_volume(label)


@step(name="rescan and mount the replicated volume (resignature)", retries=2)
def mount_volume(env: Environment, vcenter: str, label: str) -> str:
    drv = recovery(env, vcenter)
    if (found := drv.mounted_volume(label)) is not None:
        return found
    drv.rescan_storage()
    return drv.mount_volume(label)


@step(name="register VM from its .vmx", retries=2)
def register_vm(env: Environment, vcenter: str, datastore: str, vm: str) -> str:
    return recovery(env, vcenter).register_vm(datastore, vm)


@step(name="re-map VM networks", retries=2)
def remap_networks(env: Environment, vcenter: str, vm: str, mapping: dict[str, str]) -> list[str]:
    return recovery(env, vcenter).remap_networks(vm, mapping)


@step(name="power on VM", retries=2)
def power_on(env: Environment, vcenter: str, vm: str) -> None:
    hv = env.hypervisor(vcenter)
    hv.power_on(hv.find_vm(vm))


@step(name="wait for VM up", retries=0)
def wait_up(env: Environment, vcenter: str, vm: str, timeout_s: float,
            poll_s: float = 0.2) -> VmHealth:
    """Powered on and the guest's heartbeat green (its tools running), within timeout_s."""
    drv = recovery(env, vcenter)
    end = time.monotonic() + timeout_s
    while True:
        h = drv.vm_health(vm)
        if h.power_state == "poweredOn" and h.heartbeat == "green":
            return h
        if time.monotonic() > end:
            raise PermanentError(f"VM {vm} not up after {timeout_s:g}s (power {h.power_state}, "
                                 f"guest heartbeat {h.heartbeat})")
        time.sleep(poll_s)


@step(name="probe VM", retries=1)
def probe_vm(env: Environment, vcenter: str, vm: str, probes: list[str]) -> list[str]:
    """The application probes (tasks/probes.py) against the running VM; what failed."""
    from tasks.probes import ProbeContext, probe

    ctx = ProbeContext(env, vcenter, env.hypervisor(vcenter).find_vm(vm), vm)
    failed = []
    for p in probes:
        kind, _, arg = p.partition(":")
        check = probe(kind)(ctx, arg)
        if check.status != "passed":
            failed.append(f"{check.name}: {check.detail}")
    return failed


@step(name="check restore placement", retries=2)
def check_placement(env: Environment, vcenter: str, datastore: str, host: str | None,
                    networks: list[str]) -> None:
    """A restore to another vCenter, host or datastore: what it lacks, in one line, before
    a session is opened or anything is created."""
    problems = recovery(env, vcenter).placement_problems(datastore, host, networks)
    if problems:
        raise UserError(f"cannot restore to vCenter {vcenter}: {'; '.join(problems)} "
                        "(choose --datastore, --host or --network OLD=NEW)")

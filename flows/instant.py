"""Instant VM Recovery: run a VM straight from its version in the store.

instant_recover_vm: the version is published by a dpflow server process as a file
system (chunks read lazily and decrypted on demand, writes to an overlay, the store never
written: dpflow.published), mounted on an ESX host as an NFS datastore, the VM registered
from its saved configuration on those disks (its NICs on the network the user names, by
default the restore tests' isolated one) and powered on: seconds, whatever the size,
since nothing is copied first. Every piece is undone if a later one fails.
abort_instant_recovery: the VM destroyed, the datastore unmounted, the server stopped,
the overlay dropped: nothing left, production and the store untouched.

migrate_instant_recovery: the running VM's disks moved to a production datastore by the
hypervisor (Storage vMotion: RelocateVM_Task copies through the published datastore, the
overlay's writes included, and switches), then the published datastore unmounted, the
server stopped, the overlay dropped. A datastore without room, or a store that cannot be
read, is refused before anything starts.
"""

from __future__ import annotations

import time

from prefect import flow
from pydantic import BaseModel

from dpflow.environment import open_environment
from dpflow.errors import PermanentError, UserError
from drivers.protocols import VmInfo
from flows.vm_image import plan_restore
from tasks.instant import (
    InstantState,
    check_network,
    check_room,
    check_store,
    check_tools,
    migrate,
    mount,
    publish,
    register,
    save,
    state_dir,
    state_path,
    take_down,
)
from tasks.restore_test import prepare_lab
from tasks.sessions import session
from tasks.vsphere import power_on, restore_marker


class InstantResult(BaseModel):
    name: str
    vm: str
    version_id: str
    datastore: str
    host: str
    seconds_to_power_on: float
    disk_bytes: int


@flow(name="instant-recover-vm", log_prints=True)
def instant_recover_vm(dc: str, vm: str, version: str | None = None,
                       as_name: str | None = None, network: str | None = None
                       ) -> InstantResult:
    """Run a VM from its version in the store at once (Instant VM Recovery).

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        vm: the VM whose version to run
        version: a version id; empty: the latest
        as_name: name of the recovered VM (default: <vm>-instant); must be new
        network: where its NICs (those of its saved configuration) go; empty: the
            isolated network of the restore tests (restore_tests.network)
    """
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        check_tools()
        row, manifest = plan_restore(env, vm, version)
        source = VmInfo.model_validate(manifest.vm)
        vcenter = env.dc.vcenters[0].name
        name = as_name or f"{vm}-instant"
        if env.hypervisor(vcenter).vm_exists(name) or state_path(name).exists():
            raise UserError(f"a VM named '{name}' already exists: choose another --as name")
        if network:
            check_network(env, vcenter, network)
        with session(env, "instant-recover", vm) as s:
            ds = f"dpflow-ivr-{s.id[:8]}"
            state = InstantState(name=name, vm=vm, version_id=row.id, session_id=s.id,
                                 vcenter=vcenter, host=prepare_lab(env, vcenter), datastore=ds,
                                 mount=str(state_dir() / "mnt" / ds),
                                 home_datastore=source.datastore,
                                 network=network or env.dc.restore_tests.network,
                                 overlay=str(state_dir() / "overlay" / ds))
            save(state)
            try:
                state.pid = publish(env, state)
                save(state)
                state.mounted = True
                mount(env, state)
                save(state)
                info = register(env, state, source, restore_marker(s.id))
                state.vm_moref = info.moref
                save(state)
                power_on(env, vcenter, info)
            except BaseException:
                left = take_down(env, state)  # compensation: nothing half-recovered stays
                if left:
                    raise PermanentError(f"instant recovery of {vm} failed and left: "
                                         f"{'; '.join(left)}") from None
                raise
            s.status, s.message = "completed", f"{name} running from version {row.id} on {ds}"
            return InstantResult(name=name, vm=vm, version_id=row.id, datastore=ds,
                                 host=state.host, seconds_to_power_on=time.perf_counter() - t0,
                                 disk_bytes=sum(d.capacity_bytes for d in manifest.disks))


@flow(name="abort-instant-recovery", log_prints=True)
def abort_instant_recovery(dc: str, name: str) -> list[str]:
    """Undo an instant recovery: VM, datastore, published version, overlay (writes the
    guest made are dropped); returns what could not be removed (empty: nothing left).

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        name: the recovered VM
    """
    from tasks.instant import load

    with open_environment(dc) as env:
        state = load(name)
        left = take_down(env, state)
        if left:
            raise PermanentError(f"abort of {name} left: {'; '.join(left)}")
        return left


class MigrateResult(BaseModel):
    name: str
    datastore: str
    disk_bytes: int
    seconds: float


@flow(name="migrate-instant-recovery", log_prints=True)
def migrate_instant_recovery(dc: str, name: str, datastore: str | None = None) -> MigrateResult:
    """Move an instantly recovered VM to production while it runs: its disks copied to a
    production datastore and switched (Storage vMotion), then the published version
    unmounted and its overlay dropped.

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        name: the recovered VM
        datastore: the production datastore (default: where the VM's configuration is)
    """
    from tasks.instant import load

    t0 = time.perf_counter()
    with open_environment(dc) as env:
        state = load(name)
        target = datastore or state.home_datastore
        check_store(env, state)  # the store unreachable: one line, nothing started
        need = check_room(env, state, target)  # no room: one line, nothing started
        with session(env, "instant-migrate", state.vm) as s:
            info = migrate(env, state, target)
            off = [d.file_name for d in info.disks if d.datastore != target]
            if off:
                raise PermanentError(f"{name}: disks still off {target} after the migration: "
                                     f"{', '.join(off)}")
            state.vm_moref = None  # the VM is production's now: take_down leaves it
            left = take_down(env, state)
            if left:
                raise PermanentError(f"{name} runs on {target}, but left: {'; '.join(left)}")
            s.status, s.message = "completed", f"{name} migrated to {target}"
            return MigrateResult(name=name, datastore=target, disk_bytes=need,
                                 seconds=time.perf_counter() - t0)

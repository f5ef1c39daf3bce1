"""VM image backup and full VM restore (the seed's VCBimage path).

backup: quiesce guest + VM snapshot → read each frozen disk on the proxy (vLUN mount) →
chunks to the store → version committed → snapshot removed, on every exit path.
restore: version → new VM (or a powered-off VM in place) → disks written back →
verified bit for bit → optionally powered on.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from dpflow.catalog import VersionRow
from dpflow.environment import Environment, open_environment, own_stores
from dpflow.errors import UserError, first_line
from dpflow.limits import backup_slot
from dpflow.locks import exclusive
from dpflow.store.manifest import VersionManifest, read_manifest
from drivers.protocols import VmInfo
from flows.outcomes import ended
from tasks.maintenance import clean_leftovers
from tasks.media import (
    DiskCopy,
    backup_disk,
    check_version_readable,
    commit_version,
    previous_version,
    restore_disk,
    verify_restored_disk,
)
from tasks.sessions import registered, session
from tasks.site_vms import check_placement
from tasks.vsphere import (
    check_restore_target_vm,
    check_space,
    destroy_vm,
    enable_change_tracking,
    find_vm,
    frozen_snapshot,
    power_on,
    prepare_target,
    snapshot_disks,
)


class BackupResult(BaseModel):
    vm: str
    status: Literal["completed", "skipped", "failed"]
    session_id: str
    version_id: str | None = None
    quiesced: bool | None = None
    bytes_read: int = 0
    bytes_added: int = 0
    seconds: float = 0.0
    snapshot_removed: bool = True
    message: str = ""
    leftovers: list[str] = []  # what dead runs had left, cleaned up at the start


def version_note(quiesced: bool, copies: list[DiskCopy]) -> str:
    """What an administrator must know about a version, in one line."""
    parts = [] if quiesced else ["crash-consistent: the guest was not quiesced"]
    inc = sum(c.incremental for c in copies)
    parts.append(f"incremental (CBT) {inc}/{len(copies)} disks" if inc else "full")
    parts += [f"{c.manifest.label}: full, {c.manifest.full_reason}" for c in copies
              if c.manifest.full_reason and not c.manifest.full_reason.startswith("first")]
    used = sorted({c.transport for c in copies})
    if used:
        parts.append(f"transport {'+'.join(used)}")
    return "; ".join(parts)


class RestoreResult(BaseModel):
    vm: str
    version_id: str
    target: str
    created: bool
    bytes_written: int
    verified: bool
    powered_on: bool
    seconds: float
    leftovers: list[str] = []  # what dead runs had left, cleaned up at the start


@flow(name="backup-vm-image", log_prints=True)
def backup_vm_image(dc: str, vm: str, store: str | None = None, full: bool = False,
                    attempt: int = 1) -> BackupResult:
    """Back up every disk of one VM from a point-in-time snapshot.

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        vm: the VM to back up
        store: the store to write to (default: the data centre's first)
        full: read every disk whole (no CBT incremental on the previous version)
        attempt: 1 for a planned run; an automation running a failed VM again passes 2
    """
    result = back_up_vm(dc, vm, store, full)
    return ended(result, result.status, result.message)


def back_up_vm(dc: str, vm: str, store: str | None = None, full: bool = False) -> BackupResult:
    """The image backup path of one VM, run by its own flow or, many at once, by the
    night's tasks (a flow run per VM would cost more than a small incremental itself).
    A VM skipped for lack of room is a result; a failure raises."""
    with open_environment(dc) as env, own_stores(env, f"backup {vm}"):
        env.store(store, create=True)  # unknown store, wrong or missing key: one line
        vcenter, info = find_vm(env, vm)
        with backup_slot(env.dc, vm, info.datastore, info.host), \
                session(env, "backup-image", vm) as s:
            t0 = time.perf_counter()  # the backup's own time: from its slot on
            result = BackupResult(vm=vm, status="failed", session_id=s.id)
            why_not = check_space(env, vcenter, info, store)
            if why_not:
                get_run_logger().warning("skipping %s: %s", vm, why_not)
                s.status = result.status = "skipped"
                s.message = result.message = why_not
                return result
            with registered(env, store, s.id):
                result.leftovers = clean_leftovers(env, store, s.id, ("vm", vm)).lines()
                previous = None if full else previous_version(env, vm, store)
                enable_change_tracking(env, vcenter, info)
                with frozen_snapshot(env, vcenter, info, s.id) as frozen:
                    disks = snapshot_disks(env, vcenter, frozen.snap)
                    copies = [backup_disk(env, vcenter, vm, frozen.snap, d, store, previous)
                              for d in disks]
                    note = version_note(frozen.snap.quiesced, copies)
                    frozen.version_id = commit_version(env, store, s.id, info,
                                                       frozen.snap.quiesced, copies, note)
            s.status = "completed"
            s.bytes_read = sum(c.bytes_read for c in copies)
            s.bytes_written = sum(c.bytes_added for c in copies)
            return result.model_copy(update=dict(
                status="completed", version_id=frozen.version_id,
                quiesced=frozen.snap.quiesced, bytes_read=s.bytes_read,
                bytes_added=s.bytes_written, snapshot_removed=frozen.removed,
                leftovers=result.leftovers,
                seconds=time.perf_counter() - t0))


@flow(name="restore-vm-image", log_prints=True)
def restore_vm_image(dc: str, vm: str, version: str | None = None,
                     as_name: str | None = None, force: bool = False,
                     power_on_after: bool = False, vcenter: str | None = None,
                     datastore: str | None = None, host: str | None = None,
                     network_map: dict[str, str] | None = None) -> RestoreResult:
    """Give a VM back from a version: as a new VM, or in place over a powered-off one.
    With vcenter / datastore / host / network_map, to another place: another site's
    vCenter or a standalone ESX host, the VM's NICs moved to the mapped networks (the
    media leg of disaster recovery, when replication itself is lost)."""
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        row, manifest = plan_restore(env, vm, version)
        source = VmInfo.model_validate(manifest.vm)
        vcenter = vcenter or env.dc.vcenters[0].name
        if datastore or network_map or host or vcenter != env.dc.vcenters[0].name:
            nets = network_map or {}
            source = source.model_copy(update={
                "datastore": datastore or source.datastore,
                "networks": [nets.get(n, n) for n in source.networks]})
            check_placement(env, vcenter, source.datastore, host, source.networks)
        target = as_name or vm
        check_restore_target_vm(env, vcenter, source, target, as_name is None, force)
        with exclusive("vm", target), session(env, "restore-image", target) as s:
            # sessions of killed runs closed as aborted first, so the reaper in
            # prepare_target destroys the VMs their restores had half-created
            left = clean_leftovers(env, row.store, s.id, ("vm", target)).lines()
            target_vm, created = prepare_target(env, vcenter, source, target,
                                                in_place=as_name is None, force=force,
                                                session_id=s.id, host=host)
            try:
                if not created:
                    # overwriting an existing VM: prove every chunk readable first, so a
                    # damaged store fails here and never leaves a half-written disk behind
                    check_version_readable(env, row.store, manifest.version_id)
                for src, dst in zip(manifest.disks, target_vm.disks, strict=True):
                    s.bytes_written += restore_disk(env, vcenter, row.store, src, dst, target)
                    verify_restored_disk(env, vcenter, row.store, src, dst)
                if power_on_after:
                    power_on(env, vcenter, target_vm)
            except BaseException:
                if created:
                    destroy_vm(env, vcenter, target_vm)  # compensation: no half-restored VM
                raise
            s.status, s.message = "completed", f"from version {row.id}"
            return RestoreResult(vm=vm, version_id=row.id, target=target, created=created,
                                 bytes_written=s.bytes_written, verified=True,
                                 powered_on=power_on_after, seconds=time.perf_counter() - t0,
                                 leftovers=left)


def plan_restore(env: Environment, vm: str, version: str | None) -> tuple[VersionRow,
                                                                          VersionManifest]:
    """The version to restore and its manifest, checked before anything is touched: one
    UserError line for an unknown version, another VM's version or a file-level one."""
    cat = env.catalog()
    row = cat.version(version) if version else cat.latest_version(vm)
    if row.object.name != vm:
        raise UserError(f"version {row.id} belongs to VM {row.object.name}, not {vm}")
    if row.object.kind != "vm":
        raise UserError(f"version {row.id} is a {row.object.kind} version, not an image "
                        f"version; restore its files with `dpflow restore files`")
    return row, read_manifest(env.store(row.store), row.id)  # no task: the CLI calls it too


def backup_one(dc: str, name: str, store: str | None = None) -> BackupResult:
    """One VM's backup flow run; its failure becomes a failed result, not an exception.
    For a single VM the CLI calls this directly: one flow run less (≥ 1 s) than
    backup_vms."""
    state = backup_vm_image(dc, name, store, return_state=True)
    if state.is_completed():
        result: BackupResult = state.result()
        return result
    msg = str(state.message or "failed")
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - reported per VM
        msg = first_line(exc)
    return BackupResult(vm=name, status="failed", session_id="", message=msg)

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

from dpflow.errors import DpflowError, first_line
from dpflow.locks import exclusive
from tasks.catalog import close_session, open_session
from tasks.maintenance import clean_leftovers, register, unregister
from tasks.media import (
    DiskCopy,
    backup_disk,
    check_version_readable,
    commit_version,
    load_manifest,
    previous_version,
    restore_disk,
    verify_restored_disk,
)
from tasks.vsphere import (
    check_space,
    create_snapshot,
    destroy_vm,
    enable_change_tracking,
    find_vm,
    power_on,
    prepare_target,
    release_snapshot,
    remove_leftover_snapshots,
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


@flow(name="backup-vm-image", log_prints=True)
def backup_vm_image(config: str, vm: str, store: str | None = None) -> BackupResult:
    """Back up every disk of one VM from a point-in-time snapshot."""
    log = get_run_logger()
    t0 = time.perf_counter()
    vcenter, info = find_vm(config, vm)
    with exclusive("vm", vm):
        session_id = open_session(config, "backup-image", vm)
        result = BackupResult(vm=vm, status="failed", session_id=session_id)
        try:
            why_not = check_space(config, vcenter, info, store)
            if why_not:
                log.warning("skipping %s: %s", vm, why_not)
                result.status, result.message = "skipped", why_not
                return result
            register(config, store, session_id)  # prune waits for us: no chunk vanishes
            result.leftovers = clean_leftovers(config, store, session_id, ("vm", vm)).lines()
            remove_leftover_snapshots(config, vcenter, info)
            previous = previous_version(config, vm, store)
            enable_change_tracking(config, vcenter, info)
            snap = create_snapshot(config, vcenter, info, session_id)
            try:
                disks = snapshot_disks(config, vcenter, snap)
                copies = [backup_disk(config, vcenter, vm, snap, d, store, previous)
                          for d in disks]
                note = version_note(snap.quiesced, copies)
                result.version_id = commit_version(config, store, session_id, info,
                                                   snap.quiesced, copies, note)
                result.quiesced = snap.quiesced
                result.bytes_read = sum(c.bytes_read for c in copies)
                result.bytes_added = sum(c.bytes_added for c in copies)
            finally:
                result.snapshot_removed = release_snapshot(config, vcenter, snap, vm,
                                                           result.version_id)
            result.status = "completed"
            return result
        except BaseException as exc:
            result.message = first_line(exc)
            raise
        finally:
            unregister(config, store, session_id)
            result.seconds = time.perf_counter() - t0
            close_session(config, session_id, result.status, result.message,
                          result.bytes_read, result.bytes_added)


@flow(name="restore-vm-image", log_prints=True)
def restore_vm_image(config: str, vm: str, version: str | None = None,
                     as_name: str | None = None, force: bool = False,
                     power_on_after: bool = False) -> RestoreResult:
    """Give a VM back from a version: as a new VM, or in place over a powered-off one."""
    from dpflow.environment import environment

    t0 = time.perf_counter()
    env = environment(config)
    row = env.catalog().version(version) if version else env.catalog().latest_version(vm)
    if row.object.name != vm:
        raise DpflowError(f"version {row.id} belongs to VM {row.object.name}, not {vm}")
    manifest = load_manifest(config, row.id)
    target = as_name or vm
    from drivers.protocols import VmInfo

    source = VmInfo.model_validate(manifest.vm)
    vcenter = env.dc.vcenters[0].name
    with exclusive("vm", target):
        session_id = open_session(config, "restore-image", target)
        created = False
        try:
            target_vm, created = prepare_target(config, vcenter, source, target,
                                                in_place=as_name is None, force=force,
                                                session_id=session_id)
            if not created:
                # overwriting an existing VM: prove every chunk readable first, so a damaged
                # store fails here and never leaves a half-written disk behind
                check_version_readable(config, row.store, manifest.version_id)
            written = 0
            for src, dst in zip(manifest.disks, target_vm.disks, strict=True):
                written += restore_disk(config, vcenter, row.store, src, dst, target)
                verify_restored_disk(config, vcenter, row.store, src, dst)
            if power_on_after:
                power_on(config, vcenter, target_vm)
            close_session(config, session_id, "completed", f"from version {row.id}", 0, written)
            return RestoreResult(vm=vm, version_id=row.id, target=target, created=created,
                                 bytes_written=written, verified=True,
                                 powered_on=power_on_after, seconds=time.perf_counter() - t0)
        except BaseException as exc:
            if created:
                destroy_vm(config, vcenter, target_vm)  # compensation: no half-restored VM
            close_session(config, session_id, "failed", first_line(exc))
            raise


def backup_one(config: str, name: str, store: str | None = None) -> BackupResult:
    """One VM's backup flow run; its failure becomes a failed result, not an exception.
    For a single VM the CLI calls this directly: one flow run less (≥ 1 s) than
    backup_vms."""
    state = backup_vm_image(config, name, store, return_state=True)
    if state.is_completed():
        return state.result()
    msg = str(state.message or "failed")
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - reported per VM
        msg = first_line(exc)
    return BackupResult(vm=name, status="failed", session_id="", message=msg)


@flow(name="backup-vms", log_prints=True)
def backup_vms(config: str, vms: list[str], store: str | None = None) -> list[BackupResult]:
    """Several VMs in one run; a failed VM does not stop the others."""
    return [backup_one(config, name, store) for name in vms]

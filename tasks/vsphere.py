"""vSphere steps of the image paths: each asks the flow's Environment for its driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import get_run_logger
from prefect.events import emit_event

from dpflow.environment import Environment
from dpflow.errors import DpflowError, NotFound, PermanentError, UserError
from drivers.protocols import DiskInfo, QuiesceFailed, SnapshotRef, VmInfo
from tasks.common import step

SNAPSHOT_PREFIX = "dpflow-"


@step(name="find VM")
def find_vm(env: Environment, vm: str) -> tuple[str, VmInfo]:
    return env.locate_vm(vm)


@step(name="check space")
def check_space(env: Environment, vcenter: str, vm: VmInfo, store: str | None) -> str | None:
    """None when there is room; otherwise why the VM must be skipped (not failed)."""
    # opens (or creates) it: a wrong or missing key fails here, before any snapshot
    env.store(store, create=True)
    provisioned = sum(d.capacity_bytes for d in vm.disks)
    policy = env.dc.snapshot
    need_delta = int(provisioned * policy.delta_reserve_percent / 100)
    free = env.hypervisor(vcenter).datastore_free_bytes(vm.datastore)
    if free < need_delta:
        return (f"datastore {vm.datastore} has {free:,} bytes free, the snapshot delta needs "
                f"{need_delta:,} ({policy.delta_reserve_percent:g}% of {provisioned:,})")
    import shutil

    s = env.dc.store(store)
    s.path.mkdir(parents=True, exist_ok=True)
    store_free = shutil.disk_usage(s.path).free
    need_store = int(provisioned * s.min_free_percent_of_disk / 100)
    if store_free < need_store:
        return (f"store {s.name} has {store_free:,} bytes free, a backup of {vm.name} may need "
                f"{need_store:,}")
    return None


def reap_orphan_snapshots(env: Environment, vcenter: str) -> list[str]:
    """dpflow snapshots on any VM of the vCenter that no running session owns: removed,
    and each one reported (log, event, and a catalog session of kind reap-snapshot).

    A snapshot is named after its session; the session is looked up in the catalog, and
    only one still `running` owns its snapshot. A name the catalog does not know counts as
    unowned (a dpflow sharing this vCenter must share the catalog too)."""
    hv = env.hypervisor(vcenter)
    catalog = env.catalog()
    log = get_run_logger()
    reaped = []
    for snap in hv.snapshots_named(SNAPSHOT_PREFIX):
        owner = snap.name.removeprefix(SNAPSHOT_PREFIX)
        try:
            state = catalog.get_session(owner).status
        except NotFound:
            state = "unknown to the catalog"
        if state == "running":
            continue
        hv.remove_snapshot(snap)
        what = (f"removed orphan snapshot {snap.name} ({snap.moref}) of VM {snap.vm_name}: "
                f"its session is {state}")
        log.warning(what)
        emit_event(event="dpflow.snapshot.reaped", resource={
            "prefect.resource.id": f"dpflow.vm.{snap.vm_name}", "dpflow.snapshot": snap.name})
        record = catalog.begin_session("reap-snapshot", "vm", snap.vm_name or snap.vm_moref)
        catalog.end_session(record, "completed", what)
        reaped.append(snap.name)
    return reaped


@step(name="remove leftover snapshots")
def remove_leftover_snapshots(env: Environment, vcenter: str, vm: VmInfo) -> list[str]:
    """First the reaper (orphans on any VM, see reap_orphan_snapshots), then any dpflow
    snapshot left on this VM: the VM's sessions never overlap, so none is still in use."""
    removed = reap_orphan_snapshots(env, vcenter)
    hv = env.hypervisor(vcenter)
    for snap in hv.list_snapshots(vm):
        if snap.name.startswith(SNAPSHOT_PREFIX):
            hv.remove_snapshot(snap)
            removed.append(snap.name)
            get_run_logger().warning("removed leftover snapshot %s of %s", snap.name, vm.name)
    return removed


@step(name="create snapshot", retries=2, delay=2.0)
def create_snapshot(env: Environment, vcenter: str, vm: VmInfo, session_id: str) -> SnapshotRef:
    """Quiesced if the guest can; crash-consistent only if the policy allows it."""
    hv = env.hypervisor(vcenter)
    policy = env.dc.snapshot
    name = f"{SNAPSHOT_PREFIX}{session_id}"
    log = get_run_logger()
    if policy.quiesce != "never":
        last: QuiesceFailed | None = None
        for attempt in range(1, policy.quiesce_attempts + 1):
            try:
                return hv.create_snapshot(vm, name, quiesce=True)
            except QuiesceFailed as exc:
                last = exc
                log.warning("quiesced snapshot of %s failed (attempt %d/%d): %s",
                            vm.name, attempt, policy.quiesce_attempts, exc)
        if policy.quiesce == "require":
            raise PermanentError(f"guest of {vm.name} cannot be quiesced and the policy "
                                 f"requires it: {last}")
        log.warning("falling back to a crash-consistent snapshot of %s (policy: prefer)",
                    vm.name)
    return hv.create_snapshot(vm, name, quiesce=False)


@step(name="enable change tracking")
def enable_change_tracking(env: Environment, vcenter: str, vm: VmInfo) -> bool:
    """CBT on before the snapshot, so the snapshot's disks carry a changeId."""
    if not env.dc.change_tracking.enabled:
        return False
    turned_on = env.hypervisor(vcenter).enable_change_tracking(vm)
    if turned_on:
        get_run_logger().info("change tracking enabled on %s", vm.name)
    return turned_on


@step(name="snapshot disks")
def snapshot_disks(env: Environment, vcenter: str, snap: SnapshotRef) -> list[DiskInfo]:
    return env.hypervisor(vcenter).snapshot_disks(snap)


@step(name="remove snapshot", retries=4, delay=2.0)
def remove_snapshot(env: Environment, vcenter: str, snap: SnapshotRef, vm: str) -> None:
    """Compensation of create_snapshot: runs on every exit path of a backup. Any other
    snapshot of the same name (an attempt vCenter finished after it was given up) goes too."""
    hv = env.hypervisor(vcenter)
    hv.remove_snapshot(snap)
    for late in hv.list_snapshots(VmInfo(name=vm, moref=snap.vm_moref, power_state="",
                                         datastore="")):
        if late.name == snap.name:
            get_run_logger().warning("removing snapshot %s (%s) of %s: a late twin of the "
                                     "session's own", late.name, late.moref, vm)
            hv.remove_snapshot(late)


def report_orphan_snapshot(vm: str, snap: SnapshotRef, error: BaseException) -> None:
    """Never silent: an error log, and a Prefect event automations can page on."""
    get_run_logger().error("SNAPSHOT LEFT BEHIND on VM %s: %s (%s) could not be removed: %s; "
                           "remove it in vSphere or rerun the backup (it cleans up dpflow "
                           "snapshots first)", vm, snap.name, snap.moref, error)
    emit_event(event="dpflow.snapshot.orphaned", resource={
        "prefect.resource.id": f"dpflow.vm.{vm}", "dpflow.snapshot": snap.name})


def release_snapshot(env: Environment, vcenter: str, snap: SnapshotRef, vm: str,
                     version_id: str | None) -> bool:
    """Compensation of create_snapshot for every exit path of a backup.

    Removal is retried (remove_snapshot); if it still fails, it is reported loudly (error
    log and event), and when a version was already made the session fails anyway, so a
    leftover snapshot is never silent. Returns whether the snapshot is gone.
    """
    try:
        remove_snapshot(env, vcenter, snap, vm)
        return True
    except Exception as exc:
        report_orphan_snapshot(vm, snap, exc)
        if version_id:
            raise DpflowError(f"version {version_id} of {vm} is complete, but its snapshot "
                              f"{snap.name} was left: {exc}") from exc
        return False


RESTORE_MARKER = "created by dpflow restore session "


def restore_marker(session_id: str) -> str:
    """What a restore writes in the notes of a VM it creates (its retries find it by this)."""
    return f"{RESTORE_MARKER}{session_id}"


def reap_orphan_vms(env: Environment, vcenter: str) -> list[str]:
    """VMs a restore created whose session failed or was aborted (one that arrived after
    the restore gave up, or whose removal failed): destroyed, and each one reported (log,
    event, a catalog session of kind reap-vm). A completed restore's VM is the user's."""
    hv = env.hypervisor(vcenter)
    catalog = env.catalog()
    reaped = []
    for vm in hv.vms_marked(RESTORE_MARKER):
        owner = vm.annotation.removeprefix(RESTORE_MARKER).strip()
        try:
            state = catalog.get_session(owner).status
        except NotFound:
            continue  # not this catalog's: another dpflow's restore, left alone
        if state in ("running", "completed"):
            continue
        hv.destroy_vm(vm)
        what = f"destroyed VM {vm.name} ({vm.moref}) half-created by restore session " \
               f"{owner}, which is {state}"
        get_run_logger().warning(what)
        emit_event(event="dpflow.vm.reaped", resource={
            "prefect.resource.id": f"dpflow.vm.{vm.name}", "dpflow.session": owner})
        record = catalog.begin_session("reap-vm", "vm", vm.name)
        catalog.end_session(record, "completed", what)
        reaped.append(vm.name)
    return reaped


@step(name="prepare restore target")
def prepare_target(env: Environment, vcenter: str, source: VmInfo, target: str,
                   in_place: bool, force: bool, session_id: str = "",
                   host: str | None = None) -> tuple[VmInfo, bool]:
    """The VM to write into and whether this restore created it (so a failure destroys it).
    A VM this session's earlier attempt created (its marker) is taken as created now."""
    reap_orphan_vms(env, vcenter)
    hv = env.hypervisor(vcenter)
    marker = restore_marker(session_id) if session_id else ""
    existing: VmInfo | None = None
    try:
        existing = hv.find_vm(target)
    except UserError:
        existing = None
    if existing is None or (marker and existing.annotation == marker):
        if in_place and existing is None:
            raise UserError(f"VM '{target}' no longer exists: restore it with --as {target}")
        return hv.create_vm(source, target, marker, host=host), True
    _refuse_overwrite(existing, source, target, in_place, force)
    return existing, False


def _refuse_overwrite(existing: VmInfo, source: VmInfo, target: str, in_place: bool,
                      force: bool) -> None:
    if existing.power_state != "poweredOff":
        raise UserError(f"VM '{target}' is {existing.power_state}: power it off before an "
                        f"in-place restore (dpflow never overwrites a running VM)")
    if not in_place and not force:
        raise UserError(f"a VM named '{target}' already exists: choose another --as name, or "
                        f"--force to overwrite its disks")
    if [d.capacity_bytes for d in existing.disks] != [d.capacity_bytes for d in source.disks]:
        raise UserError(f"VM '{target}' has disks of other sizes than the version; restore "
                        f"with --as NEWNAME instead")


@step(name="check restore target")
def check_restore_target_vm(env: Environment, vcenter: str, source: VmInfo, target: str,
                            in_place: bool, force: bool) -> None:
    """The same refusals as prepare_target, before a session is opened: a user mistake
    leaves no session behind."""
    try:
        existing = env.hypervisor(vcenter).find_vm(target)
    except UserError:
        if in_place:
            raise UserError(f"VM '{target}' no longer exists: restore it with --as {target}"
                            ) from None
        return
    _refuse_overwrite(existing, source, target, in_place, force)


@step(name="destroy half-restored VM", retries=3)
def destroy_vm(env: Environment, vcenter: str, vm: VmInfo) -> None:
    env.hypervisor(vcenter).destroy_vm(vm)


@step(name="power on")
def power_on(env: Environment, vcenter: str, vm: VmInfo) -> None:
    env.hypervisor(vcenter).power_on(vm)




@dataclass
class FrozenDisks:
    """A point-in-time snapshot held for a backup; the flow records its version on it."""

    snap: SnapshotRef
    version_id: str | None = None
    removed: bool = False


@contextmanager
def frozen_snapshot(env: Environment, vcenter: str, vm: VmInfo,
                    session_id: str) -> Iterator[FrozenDisks]:
    """Leftovers of killed sessions removed, then a (quiesced if possible) snapshot; it is
    released on every exit path (release_snapshot: retried, loud if it stays)."""
    remove_leftover_snapshots(env, vcenter, vm)
    frozen = FrozenDisks(create_snapshot(env, vcenter, vm, session_id))
    try:
        yield frozen
    finally:
        frozen.removed = release_snapshot(env, vcenter, frozen.snap, vm.name,
                                          frozen.version_id)

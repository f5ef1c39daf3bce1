"""File-level backup and restore of guest file systems (the seed's VCBfile, and beyond).

backup: level planned from the catalog (before any hardware) → snapshot → each frozen
disk's NTFS/ext volumes walked on the proxy, new or changed file data into the store →
file index + manifest durable → version catalogued with every file → snapshot removed,
on every exit path. No version is catalogued unless every disk was walked.
restore: files of a file-level version, or straight out of an image version (read
lazily), to a directory on the proxy, through SafeTarget (never outside it).
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from dpflow.errors import UserError, first_line
from dpflow.guestfs.target import CONFLICTS
from dpflow.locks import exclusive
from tasks.catalog import close_session, open_session
from tasks.filebackup import backup_disk_files, commit_files_version, plan_level
from tasks.guestfiles import (
    FileRestore,
    check_restore_target,
    image_version_of,
    restore_catalogued_files,
    restore_image_files,
    select_catalogued,
)
from tasks.maintenance import clean_leftovers, register, unregister
from tasks.vsphere import (
    check_space,
    create_snapshot,
    find_vm,
    release_snapshot,
    remove_leftover_snapshots,
    snapshot_disks,
)


class FileBackupResult(BaseModel):
    vm: str
    status: Literal["completed", "skipped", "failed"]
    session_id: str
    level: str
    base_version: str | None = None
    version_id: str | None = None
    quiesced: bool | None = None
    files: int = 0
    files_read: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    volumes: list[dict] = []
    problems: list[str] = []
    seconds: float = 0.0
    snapshot_removed: bool = True
    message: str = ""
    leftovers: list[str] = []  # what dead runs had left, cleaned up at the start


class FileRestoreResult(FileRestore):
    vm: str
    version_id: str
    source: Literal["files", "image"]
    target: str
    seconds: float = 0.0


@flow(name="backup-vm-files", log_prints=True)
def backup_vm_files(config: str, vm: str, level: str = "full",
                    include: list[str] | None = None, exclude: list[str] | None = None,
                    store: str | None = None, full_if_needed: bool = False) -> FileBackupResult:
    """Back up the guest files of one VM from a point-in-time snapshot."""
    log = get_run_logger()
    t0 = time.perf_counter()
    level, base = plan_level(config, vm, level, store, full_if_needed)
    vcenter, info = find_vm(config, vm)
    with exclusive("vm", vm):
        session_id = open_session(config, "backup-files", vm, "vmfiles")
        result = FileBackupResult(vm=vm, status="failed", session_id=session_id, level=level,
                                  base_version=base)
        try:
            why_not = check_space(config, vcenter, info, store)
            if why_not:
                log.warning("skipping %s: %s", vm, why_not)
                result.status, result.message = "skipped", why_not
                return result
            register(config, store, session_id)  # prune waits for us: no chunk vanishes
            result.leftovers = clean_leftovers(config, store, session_id, ("vm", vm)).lines()
            remove_leftover_snapshots(config, vcenter, info)
            snap = create_snapshot(config, vcenter, info, session_id)
            try:
                disks = snapshot_disks(config, vcenter, snap)
                parts = [backup_disk_files(config, vcenter, vm, d, i, base, include, exclude,
                                           store) for i, d in enumerate(disks)]
                problems = [p for part in parts for p in part.problems]
                note = "" if snap.quiesced else "crash-consistent: the guest was not quiesced"
                if problems:
                    note = f"{note}; {len(problems)} problem(s): {problems[0]}".lstrip("; ")
                result.version_id = commit_files_version(config, store, session_id, info,
                                                         snap.quiesced, level, base, parts,
                                                         note)
                result.quiesced = snap.quiesced
                result.files = sum(len(p.files) for p in parts)
                result.files_read = sum(p.files_read for p in parts)
                result.bytes_read = sum(p.bytes_read for p in parts)
                result.bytes_added = sum(p.bytes_added for p in parts)
                result.volumes = [v for p in parts for v in p.volumes]
                result.problems = problems
                for p in problems:
                    log.warning("%s: %s", vm, p)
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


def _publish_restore(r: FileRestore, session_id: str, what: str) -> None:
    """The totals and every renamed, refused, skipped and failed object, kept with the
    flow run (the catalog's session keeps the totals line)."""
    lines = [f"# {what}", "", f"session {session_id}: {r.totals()}", ""]
    for kind, items in (("renamed", r.renamed), ("refused", r.refused),
                        ("skipped", r.skipped), ("failed", r.failed),
                        ("temporary files of an interrupted restore, removed", r.leftovers)):
        if items:
            lines += [f"## {kind} ({len(items)})", ""] + [f"- `{i}`" for i in items] + [""]
    create_markdown_artifact(markdown="\n".join(lines), key=f"restore-{session_id}".lower(),
                             description=r.totals())


def _check_restore_input(conflict: str) -> None:
    if conflict not in CONFLICTS:
        raise UserError(f"unknown conflict policy '{conflict}': use one of "
                        f"{', '.join(CONFLICTS)}")


@flow(name="restore-vm-files", log_prints=True)
def restore_vm_files(config: str, vm: str, target: str, patterns: list[str],
                     version: str | None = None, conflict: str = "skip") -> FileRestoreResult:
    """Files and directories of a file-level version to a directory on the proxy."""
    from dpflow.guestfs import SafeTarget

    t0 = time.perf_counter()
    _check_restore_input(conflict)
    version_id, _ = select_catalogued(config, vm, patterns, version)
    check_restore_target(config, target)
    SafeTarget(target).close()  # not writable: one line, before anything is read
    session_id = open_session(config, "restore-files", vm, "vmfiles")
    try:
        r = restore_catalogued_files(config, vm, version_id, patterns, target, conflict)
    except BaseException as exc:
        close_session(config, session_id, "failed", first_line(exc))
        raise
    _publish_restore(r, session_id, f"files of {vm} from version {version_id}")
    close_session(config, session_id, "completed", f"from version {version_id}: {r.totals()}",
                  0, r.bytes_written)
    return FileRestoreResult(**r.model_dump(), vm=vm, version_id=version_id, source="files",
                             target=target, seconds=time.perf_counter() - t0)


@flow(name="restore-files-from-image", log_prints=True)
def restore_files_from_image(config: str, vm: str, target: str, patterns: list[str],
                             version: str | None = None,
                             conflict: str = "skip") -> FileRestoreResult:
    """Single files out of an image version, without restoring the VM: the version's disks
    are read lazily (only the chunks the file systems need) with a small cache."""
    from dpflow.guestfs import SafeTarget

    t0 = time.perf_counter()
    _check_restore_input(conflict)
    version_id = image_version_of(config, vm, version)
    check_restore_target(config, target)
    SafeTarget(target).close()
    session_id = open_session(config, "restore-files-image", vm)
    try:
        r = restore_image_files(config, vm, version_id, patterns, target, conflict)
    except BaseException as exc:
        close_session(config, session_id, "failed", first_line(exc))
        raise
    _publish_restore(r, session_id, f"files of {vm} from image version {version_id}")
    close_session(config, session_id, "completed",
                  f"from image version {version_id}: {r.totals()}", r.source_bytes_read,
                  r.bytes_written)
    return FileRestoreResult(**r.model_dump(), vm=vm, version_id=version_id, source="image",
                             target=target, seconds=time.perf_counter() - t0)


@flow(name="restore-vm-files-into-guest", log_prints=True)
def restore_vm_files_into_guest(config: str, vm: str, guest_dir: str, patterns: list[str],
                                version: str | None = None, conflict: str = "skip",
                                guest_user: str | None = None,
                                guest_password_env: str | None = None) -> FileRestoreResult:
    """Files of a file-level version back into the running guest (vSphere guest
    operations: InitiateFileTransferToGuest, then an HTTP PUT), under `guest_dir`."""
    from tasks.guestfiles import guest_password, restore_into_guest

    t0 = time.perf_counter()
    _check_restore_input(conflict)
    guest_password(guest_user, guest_password_env)  # missing credentials: one line, first
    version_id, _ = select_catalogued(config, vm, patterns, version)
    session_id = open_session(config, "restore-files-guest", vm, "vmfiles")
    try:
        r = restore_into_guest(config, vm, version_id, patterns, guest_dir, guest_user,
                               guest_password_env, conflict)
    except BaseException as exc:
        close_session(config, session_id, "failed", first_line(exc))
        raise
    _publish_restore(r, session_id, f"files of {vm} from version {version_id} into the guest")
    close_session(config, session_id, "completed",
                  f"from version {version_id} into the guest: {r.totals()}", 0, r.bytes_written)
    return FileRestoreResult(**r.model_dump(), vm=vm, version_id=version_id, source="files",
                             target=f"guest:{guest_dir}", seconds=time.perf_counter() - t0)

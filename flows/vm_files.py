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

from dpflow.environment import open_environment
from dpflow.errors import PermanentError, UserError
from dpflow.guestfs.target import CONFLICTS
from dpflow.locks import exclusive
from flows.outcomes import ended
from tasks.filebackup import DiskFiles, backup_disk_files, commit_files_version, plan_level
from tasks.guestfiles import (
    FileRestore,
    check_restore_target,
    image_version_of,
    restore_catalogued_files,
    restore_image_files,
    select_catalogued,
)
from tasks.maintenance import clean_leftovers
from tasks.sessions import SessionRecord, registered, session
from tasks.vsphere import check_space, find_vm, frozen_snapshot, snapshot_disks


class FileBackupResult(BaseModel):
    vm: str
    status: Literal["completed", "partial", "skipped", "failed"]
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
def backup_vm_files(dc: str, vm: str, level: str = "full",
                    include: list[str] | None = None, exclude: list[str] | None = None,
                    store: str | None = None, full_if_needed: bool = False) -> FileBackupResult:
    """Back up the guest files of one VM from a point-in-time snapshot."""
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        log = get_run_logger()
        env.store(store, create=True)  # unknown store, wrong key: one line, no session
        level, base = plan_level(env, vm, level, store, full_if_needed)
        vcenter, info = find_vm(env, vm)
        with exclusive("vm", vm), session(env, "backup-files", vm, "vmfiles") as s:
            result = FileBackupResult(vm=vm, status="failed", session_id=s.id, level=level,
                                      base_version=base)
            why_not = check_space(env, vcenter, info, store)
            if why_not:
                log.warning("skipping %s: %s", vm, why_not)
                s.status = result.status = "skipped"
                s.message = result.message = why_not
                return ended(result, "skipped", why_not)
            with registered(env, store, s.id):
                result.leftovers = clean_leftovers(env, store, s.id, ("vm", vm)).lines()
                with frozen_snapshot(env, vcenter, info, s.id) as frozen:
                    disks = snapshot_disks(env, vcenter, frozen.snap)
                    parts = [backup_disk_files(env, vcenter, vm, d, i, base, include, exclude,
                                               store) for i, d in enumerate(disks)]
                    problems = [p for part in parts for p in part.problems]
                    require_a_readable_volume(vm, parts)
                    note = ("" if frozen.snap.quiesced
                            else "crash-consistent: the guest was not quiesced")
                    if problems:
                        note = f"{note}; {len(problems)} problem(s): {problems[0]}".lstrip("; ")
                    frozen.version_id = commit_files_version(
                        env, store, s.id, info, frozen.snap.quiesced, level, base, parts, note)
            for p in problems:
                log.warning("%s: %s", vm, p)
            s.status = "partial" if problems else "completed"
            if problems:
                s.message = f"{len(problems)} problem(s), first: {problems[0]}"
            s.bytes_read = sum(p.bytes_read for p in parts)
            s.bytes_written = sum(p.bytes_added for p in parts)
            return ended(result.model_copy(update=dict(
                status=s.status, message=s.message, version_id=frozen.version_id,
                quiesced=frozen.snap.quiesced, files=sum(len(p.files) for p in parts),
                files_read=sum(p.files_read for p in parts), bytes_read=s.bytes_read,
                bytes_added=s.bytes_written, volumes=[v for p in parts for v in p.volumes],
                problems=problems, snapshot_removed=frozen.removed, leftovers=result.leftovers,
                seconds=time.perf_counter() - t0)), s.status, s.message)


def require_a_readable_volume(vm: str, parts: list[DiskFiles]) -> None:
    """A file-level version in which no guest file system could be read protects nothing:
    fail (no version) rather than catalogue an empty one."""
    volumes = [v for p in parts for v in p.volumes]
    if not any(v.get("fs_type") not in (None, "swap", "lvm") for v in volumes):
        seen = ", ".join(f"{v['name']}: {v.get('error') or 'no file system'}"
                         for v in volumes) or "no partition or volume found"
        raise PermanentError(f"no guest file system of {vm} could be read ({seen}); nothing "
                             f"was protected: back it up as an image instead")


def _record_restore(s: SessionRecord, r: FileRestore, source: str, what: str) -> None:
    """The session's outcome and totals line, and every renamed, refused, skipped and
    failed object kept with the flow run as an artifact."""
    s.status, s.message = restore_status(r), f"{source}: {r.totals()}"
    s.bytes_read, s.bytes_written = r.source_bytes_read, r.bytes_written
    session_id = s.id
    lines = [f"# {what}", "", f"session {session_id}: {r.totals()}", ""]
    for kind, items in (("renamed", r.renamed), ("refused", r.refused),
                        ("skipped", r.skipped), ("failed", r.failed),
                        ("temporary files of an interrupted restore, removed", r.leftovers)):
        if items:
            lines += [f"## {kind} ({len(items)})", ""] + [f"- `{i}`" for i in items] + [""]
    create_markdown_artifact(markdown="\n".join(lines), key=f"restore-{session_id}".lower(),
                             description=r.totals())


def restore_status(r: FileRestore) -> str:
    """Partial when anything the user asked for was refused or failed (both listed)."""
    return "partial" if r.failed or r.refused else "completed"


def _check_restore_input(conflict: str) -> None:
    if conflict not in CONFLICTS:
        raise UserError(f"unknown conflict policy '{conflict}': use one of "
                        f"{', '.join(CONFLICTS)}")


@flow(name="restore-vm-files", log_prints=True)
def restore_vm_files(dc: str, vm: str, target: str, patterns: list[str],
                     version: str | None = None, conflict: str = "skip") -> FileRestoreResult:
    """Files and directories of a file-level version to a directory on the proxy."""
    with open_environment(dc) as env:
        from dpflow.guestfs import SafeTarget

        t0 = time.perf_counter()
        _check_restore_input(conflict)
        version_id, _ = select_catalogued(env, vm, patterns, version)
        check_restore_target(env, target)
        SafeTarget(target).close()  # not writable: one line, before anything is read
        with session(env, "restore-files", vm, "vmfiles") as s:
            r = restore_catalogued_files(env, vm, version_id, patterns, target, conflict)
            _record_restore(s, r, f"from version {version_id}",
                            f"files of {vm} from version {version_id}")
        return ended(FileRestoreResult(
            **r.model_dump(), vm=vm, version_id=version_id, source="files",
            target=target, seconds=time.perf_counter() - t0), restore_status(r), r.totals())


@flow(name="restore-files-from-image", log_prints=True)
def restore_files_from_image(dc: str, vm: str, target: str, patterns: list[str],
                             version: str | None = None,
                             conflict: str = "skip") -> FileRestoreResult:
    """Single files out of an image version, without restoring the VM: the version's disks
    are read lazily (only the chunks the file systems need) with a small cache."""
    with open_environment(dc) as env:
        from dpflow.guestfs import SafeTarget

        t0 = time.perf_counter()
        _check_restore_input(conflict)
        version_id = image_version_of(env, vm, version)
        check_restore_target(env, target)
        SafeTarget(target).close()
        with session(env, "restore-files-image", vm) as s:
            r = restore_image_files(env, vm, version_id, patterns, target, conflict)
            _record_restore(s, r, f"from image version {version_id}",
                            f"files of {vm} from image version {version_id}")
        return ended(FileRestoreResult(
            **r.model_dump(), vm=vm, version_id=version_id, source="image",
            target=target, seconds=time.perf_counter() - t0), restore_status(r), r.totals())


@flow(name="restore-vm-files-into-guest", log_prints=True)
def restore_vm_files_into_guest(dc: str, vm: str, guest_dir: str, patterns: list[str],
                                version: str | None = None, conflict: str = "skip",
                                guest_user: str | None = None,
                                guest_password_env: str | None = None) -> FileRestoreResult:
    """Files of a file-level version back into the running guest (vSphere guest
    operations: InitiateFileTransferToGuest, then an HTTP PUT), under `guest_dir`."""
    with open_environment(dc) as env:
        from tasks.guestfiles import guest_password, restore_into_guest

        t0 = time.perf_counter()
        _check_restore_input(conflict)
        guest_password(guest_user, guest_password_env)  # missing credentials: one line, first
        version_id, _ = select_catalogued(env, vm, patterns, version)
        with session(env, "restore-files-guest", vm, "vmfiles") as s:
            r = restore_into_guest(env, vm, version_id, patterns, guest_dir, guest_user,
                                   guest_password_env, conflict)
            _record_restore(s, r, f"from version {version_id} into the guest",
                            f"files of {vm} from version {version_id} into the guest")
        return ended(FileRestoreResult(
            **r.model_dump(), vm=vm, version_id=version_id, source="files",
            target=f"guest:{guest_dir}", seconds=time.perf_counter() - t0),
            restore_status(r), r.totals())

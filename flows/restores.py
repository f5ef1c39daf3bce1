"""Restores as an operator starts them from the Prefect UI: flat, typed parameters, and
the restore point chosen at run time from the versions the catalog holds now.

Each flow checks its input against the data centre and the catalog first (an unknown
data centre, VM, LUN group or version fails the run with one line, nothing touched),
then, unless a version was named, pauses and asks which restore point to use
(flows.restore_point), then runs the restore flow of its path as a subflow, which
verifies what it wrote and emits the dpflow.restore.* event.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from dpflow.errors import UserError
from flows.restore_point import Choice, ask

Conflict = Literal["skip", "overwrite", "rename"]
VersionChoice = str  # "ask" | "latest" | a version id: free text, checked at run time
# Prefect titles each field with its parameter name and takes its description from the
# docstring's Args section (Field titles in the signature are not shown), so the names
# are chosen to read well in the form and every flow documents its arguments.


def _catalog(dc: str):  # noqa: ANN202 - the core's Catalog
    from dpflow.environment import environment

    return environment(dc).catalog()


def _pick(dc: str, obj: str, object_kind: str, version: str) -> str:
    """The version id to restore: named, latest or asked for, always one that exists."""
    rows = _catalog(dc).versions(obj, object_kind)
    if not rows:
        raise UserError(f"no version of '{obj}' in the catalog of data centre '{dc}': check "
                        f"the name, or back it up first")
    if version == "latest":
        return rows[-1].id
    if version != "ask":
        if version not in {r.id for r in rows}:
            raise UserError(f"unknown version '{version}' of '{obj}': use `ask`, `latest` or "
                            f"one of the ids `dpflow versions {obj}` lists")
        return version
    return ask(obj, [Choice(version_id=r.id, created=r.created, note=r.note) for r in rows])


@flow(name="restore-vm", log_prints=True)
def restore_vm(vm: str, version: VersionChoice = "ask", restore_as: str = "",
               overwrite: bool = False, power_on: bool = False, dc: str = "default") -> dict:
    """Full VM restore from the Prefect UI: the restore point is chosen when the run asks.

    Args:
        vm: the VM whose version to restore
        version: `ask` (the run pauses and offers the versions in the catalog now),
            `latest`, or a version id
        restore_as: name of a new VM to restore into; empty: in place, over the
            powered-off VM
        overwrite: in place: overwrite the existing VM's disks
        power_on: power the VM on once its disks are verified
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.vm_image import restore_vm_image

    version_id = _pick(dc, vm, "vm", version)
    r = restore_vm_image(dc, vm, version_id, restore_as or None, overwrite, power_on)
    return r.model_dump()


@flow(name="restore-files", log_prints=True)
def restore_files(vm: str, patterns: list[str], target_dir: str, version: VersionChoice = "ask",
                  conflict: Conflict = "skip", dc: str = "default") -> dict:
    """Files of a file-level version to a directory on the proxy; the version is asked.

    Args:
        vm: the VM whose guest files to restore
        patterns: paths or glob patterns inside the guest, e.g. /etc/**
        target_dir: directory on the backup proxy to restore into
        version: `ask`, `latest`, or a file-level version id
        conflict: what to do when a file exists in the target
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.vm_files import restore_vm_files

    version_id = _pick(dc, vm, "vmfiles", version)
    return restore_vm_files(dc, vm, target_dir, patterns, version_id, conflict).model_dump()


@flow(name="restore-files-from-image", log_prints=True)
def restore_image_files(vm: str, patterns: list[str], target_dir: str,
                        version: VersionChoice = "ask", conflict: Conflict = "skip",
                        dc: str = "default") -> dict:
    """Single files out of an image version, without restoring the VM.

    Args:
        vm: the VM whose image version holds the files
        patterns: paths or glob patterns inside the guest, e.g. /etc/**
        target_dir: directory on the backup proxy to restore into
        version: `ask`, `latest`, or an image version id
        conflict: what to do when a file exists in the target
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.vm_files import restore_files_from_image

    version_id = _pick(dc, vm, "vm", version)
    return restore_files_from_image(dc, vm, target_dir, patterns, version_id,
                                    conflict).model_dump()


@flow(name="restore-luns", log_prints=True)
def restore_luns(group: str, replica_set: str = "ask", detach_hosts: bool = False,
                 dc: str = "default") -> dict:
    """Instant Recovery of a LUN group from a replica set still on the array.

    Args:
        group: the LUN group to restore
        replica_set: `ask` (the run offers the replica sets on the array now), `latest`,
            or a replica set name
        detach_hosts: take the LUNs away from the hosts using them during the restore
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.luns import restore_luns_from_replica

    rows = _catalog(dc).replica_sets(group)
    if not rows:
        raise UserError(f"no replica set of LUN group '{group}' in data centre '{dc}'")
    if replica_set == "ask":
        vid = ask(group, [Choice(version_id=r.version_id, created=r.version.created,
                                 note=f"{r.name} ({r.kind})") for r in rows])
        name = next(r.name for r in rows if r.version_id == vid)
    elif replica_set == "latest":
        name = rows[-1].name
    else:
        name = replica_set
    return restore_luns_from_replica(dc, group, name, detach_hosts).model_dump()

"""The hardware boundary as typed Protocols.

Flows and tasks only ever see these; the real adapters (pyVmomi, pywbem) live in sibling
modules and are chosen by configuration. Every method may raise the errors of
`drivers.errors`: TransientError (retry), PermanentError (give up), NotFound/UserError; each
Protocol's written contract says which, and one conformance suite per Protocol checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from drivers.errors import PermanentError, TransientError


class QuiesceFailed(TransientError):
    """The guest could not be quiesced; the snapshot policy decides what happens next."""


class CbtUnusable(PermanentError):
    """Change tracking cannot answer for this disk: the caller must read it in full."""


class TaskDeadlineExceeded(TransientError):
    """A hypervisor task ran past its deadline and may still finish: `task` names it, so
    a retry can wait for it or undo it instead of starting the same work twice."""

    def __init__(self, message: str, task: str = "") -> None:
        super().__init__(message)
        self.task = task


class DiskInfo(BaseModel):
    """One virtual disk as the hypervisor describes it."""

    key: int
    label: str
    capacity_bytes: int
    datastore: str
    file_name: str = Field(description="descriptor path, e.g. '[LocalDS_0] vm1/disk1.vmdk'")
    controller_key: int | None = None
    unit_number: int | None = None
    change_id: str | None = Field(None, description="CBT changeId of this state of the disk")


class VmInfo(BaseModel):
    """What a backup needs to know about a VM, and what a restore needs to rebuild it."""

    name: str
    moref: str
    power_state: str
    datastore: str
    host: str = ""  # the ESX host running it (backups are limited per host)
    num_cpu: int = 1
    memory_mb: int = 128
    guest_id: str = "otherGuest"
    disks: list[DiskInfo] = []
    annotation: str = Field("", description="the VM's notes (a restore marks its VMs here)")
    networks: list[str] = Field([], description="the network of each NIC, in device order "
                                "(a restore gives the new VM these NICs)")


class RawDisk(BaseModel):
    """A raw device mapping (RDM): a VM disk that passes an array LUN through."""

    key: int
    label: str
    device_name: str  # e.g. /vmfs/devices/disks/naa.600508b4...
    lun_uuid: str
    compatibility_mode: str  # physicalMode | virtualMode
    wwn: str  # the LUN's WWN (hex, lower case), from the device name


class SnapshotRef(BaseModel):
    moref: str
    name: str
    vm_moref: str
    quiesced: bool
    vm_name: str = ""


# ---- hypervisors ----------------------------------------------------------------------
# The hypervisor boundary. Contract (every implementation, checked by
# tests/conformance/test_hypervisor_protocol.py):
# - Objects: a VM is found by name (find_vm), then addressed by VmInfo.moref; a snapshot
#   by its SnapshotRef. Names are the administrator's; morefs are the hypervisor's.
# - Errors: NotFound for a name that names nothing (VM, datastore); UserError for what the
#   administrator must fix (credentials, TLS trust, an unknown datacenter); TransientError
#   for what may heal (timeouts, dropped connections, HTTP 5xx, busy objects, a guest that
#   cannot quiesce now = QuiesceFailed, a task past its deadline = TaskDeadlineExceeded);
#   PermanentError for the rest (CbtUnusable among them). Messages keep the hypervisor's
#   own words (fault name and text). Calls are not retried inside (except for the login,
#   below): retry is the caller's, from the error's type.
# - Sessions: an implementation logs in when first used and logs in again by itself when
#   the server ends the session (SOAP and datastore reads alike); callers never see it.
# - Tasks: a call that starts a hypervisor task waits for its end up to the endpoint's task
#   deadline; past it, TaskDeadlineExceeded names the task, which may still finish.
# - Idempotency: remove_snapshot of a snapshot that is gone, destroy_vm of a VM that is
#   gone, enable_change_tracking when it is on, power_on of a running VM and power_off of
#   a stopped one all succeed without doing anything. create_snapshot (by its name) and
#   create_vm (by its name and marker) look for an earlier attempt's result before they
#   create anything: a retry after a lost answer never leaves a second snapshot or VM.
# - Threads: one instance may be used from several threads at once.


@runtime_checkable
class DiskReader(Protocol):
    """A frozen disk read by ranges (the 'vLUN mount' of the proxy)."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (fewer only at the end of the disk); safe
        from several threads at once. TransientError when the transfer keeps failing."""
        ...

    def close(self) -> None: ...


class Hypervisor(Protocol):
    """A vCenter or standalone ESX host (contract above)."""

    def check(self) -> None:
        """Log in and prove the endpoint is usable; raise UserError with a clear line if not."""
        ...

    def find_vm(self, name: str) -> VmInfo:
        """The VM called `name` with its disks as they are now; NotFound if none."""
        ...

    def raw_disks(self, vm: VmInfo) -> list[RawDisk]:
        """The VM's RDM disks with the identity of the LUN each passes through."""
        ...

    def vm_exists(self, name: str) -> bool: ...

    def create_snapshot(self, vm: VmInfo, name: str, quiesce: bool) -> SnapshotRef:
        """A snapshot without memory; quiesced (QuiesceFailed if the guest cannot) or
        crash-consistent. Its disks no longer change while it exists. Idempotent by name:
        a snapshot `name` that an earlier call made (even one whose answer was lost, or
        whose task ran past its deadline) is waited for and returned, never doubled."""
        ...

    def remove_snapshot(self, snap: SnapshotRef) -> None:
        """Remove it and merge its changes into the VM's disks; a gone snapshot is a no-op."""
        ...

    def list_snapshots(self, vm: VmInfo) -> list[SnapshotRef]:
        """Every snapshot of the VM, whoever took it."""
        ...

    def snapshots_named(self, prefix: str) -> list[SnapshotRef]:
        """Every snapshot of every VM whose name starts with `prefix`, with its VM's name."""
        ...

    def vms_marked(self, prefix: str) -> list[VmInfo]:
        """Every VM whose notes (create_vm's marker) start with `prefix`; name, moref,
        power state and annotation filled in."""
        ...

    def snapshot_disks(self, snap: SnapshotRef) -> list[DiskInfo]:
        """The disks as frozen in the snapshot (their backing no longer changes)."""
        ...

    def datastore_free_bytes(self, datastore: str) -> int:
        """Free bytes of the datastore, refreshed now; NotFound for an unknown name."""
        ...

    def enable_change_tracking(self, vm: VmInfo) -> bool:
        """Turn CBT on if it is off; True if it was turned on now (no changeId to trust yet)."""
        ...

    def changed_areas(self, snap: SnapshotRef, disk: DiskInfo,
                      since_change_id: str) -> list[tuple[int, int]]:
        """(start, length) areas changed since `since_change_id` ('*' = allocated areas),
        paged to the end of the disk and checked; raises CbtUnusable when the answer
        cannot be trusted (reset or unknown changeId, tracking off)."""
        ...

    def open_disk(self, disk: DiskInfo) -> DiskReader:
        """A reader of the disk's bytes (a snapshot's frozen disk for a backup); the caller
        closes it. Reads of a cut or refused transfer are retried and resumed."""
        ...

    def create_vm(self, spec: VmInfo, name: str, marker: str = "", network: str | None = None,
                  host: str | None = None) -> VmInfo:
        """Register a new VM with the spec's hardware and empty disks of the spec's sizes,
        `marker` in its notes (VmInfo.annotation); with `network`, one NIC on that network
        (else none), with `host`, placed on that ESX host. A name in use is refused
        (PermanentError), except that with a marker the call is idempotent: a VM `name`
        carrying it, made by an earlier call, is waited for and returned."""
        ...

    def write_disk(self, disk: DiskInfo, blocks: Iterable[bytes]) -> None:
        """Replace the disk's whole content by the concatenation of `blocks`. On an error
        the disk's content is undefined: write it again or discard the VM."""
        ...

    def power_on(self, vm: VmInfo) -> None:
        """Running afterwards; a running VM is left as it is."""
        ...

    def power_off(self, vm: VmInfo) -> None:
        """Stopped afterwards (a hard power-off); a stopped VM is left as it is."""
        ...

    def destroy_vm(self, vm: VmInfo) -> None:
        """Power off if needed, then delete the VM and its files; a gone VM is a no-op."""
        ...

    def close(self) -> None:
        """Log out and release connections; the instance may log in again when used."""
        ...


# ---- storage arrays -----------------------------------------------------------------
# The storage array boundary. Contract (every implementation, checked by
# tests/conformance/test_array_protocol.py):
# - Objects are named: vdisks, hosts and replica sets by their names on the array.
# - A replica set is N vdisks replicated as ONE consistency group: one point in time for
#   all members even while hosts write.
# - Long operations wait for the array's job up to `deadline_s`; running past it raises
#   TransientError (the job may still finish: look again by name, the calls are
#   idempotent only where they say so).
# - Errors: NotFound / UserError for bad names and refusals caused by the request (name
#   clash, illegal state change), TransientError for what may heal (busy, in use,
#   timeouts, lost connections), PermanentError for the rest. Messages keep the array's
#   own words. A refusal for lack of room in a disk group is OutOfSpace (a PermanentError),
#   so a loose replica policy can fall back to a cheaper kind.


class OutOfSpace(PermanentError):
    """The array refused for lack of room in a disk group (a loose policy may fall back)."""


class ReplicaKind(StrEnum):
    SNAPSHOT = "snapshot"  # copy-on-write, space reserved
    VSNAP = "vsnap"  # copy-on-write, space-efficient
    SNAPCLONE = "snapclone"  # full independent copy of the point in time
    MIRRORCLONE = "mirrorclone"  # synchronised copy until fractured


class ReplicaState(StrEnum):
    ESTABLISHED = "established"  # a snapshot's point in time holds
    SYNCHRONIZED = "synchronized"  # a mirror follows its source
    FRACTURED = "fractured"  # an independent point in time (clone done, mirror split)
    COPYING = "copying"  # a clone is still being copied
    BROKEN = "broken"  # no valid data (e.g. a vsnap whose pool filled up)


class PoolInfo(BaseModel):
    name: str
    total_bytes: int
    free_bytes: int


class VDiskInfo(BaseModel):
    name: str
    wwn: str
    size_bytes: int
    pool: str


class Replica(BaseModel):
    source: str
    target: str
    state: ReplicaState
    copy_state: int  # SMI-S CopyState, as the array said
    sync_state: int  # SMI-S SyncState, as the array said


class ReplicaSet(BaseModel):
    name: str
    kind: ReplicaKind
    replicas: list[Replica]


class Presentation(BaseModel):
    vdisk: str
    host: str
    lun: int
    read_only: bool = False


@runtime_checkable
class ArrayDriver(Protocol):
    """One disk array (an EVA over SMI-S, or any other implementation)."""

    def check(self) -> None:
        """Prove the endpoint answers and is an array we can drive; UserError if not."""
        ...

    def list_pools(self) -> list[PoolInfo]: ...

    def list_vdisks(self) -> list[VDiskInfo]: ...

    def get_vdisk(self, name: str) -> VDiskInfo:
        """NotFound if there is no vdisk of that name."""
        ...

    def create_vdisk(self, name: str, size_bytes: int, pool: str,
                     deadline_s: float = 60.0) -> VDiskInfo: ...

    def delete_vdisk(self, name: str, deadline_s: float = 60.0) -> None:
        """Refused (TransientError, in use) while presented or while it has replicas."""
        ...

    def create_replica_set(self, name: str, sources: list[str], kind: ReplicaKind,
                           pool: str | None = None, deadline_s: float = 300.0) -> ReplicaSet:
        """Replicate `sources` as one consistency group; targets are named `<name>-<src>`."""
        ...

    def get_replica_set(self, name: str) -> ReplicaSet:
        """The set with each member's state read now; NotFound if absent."""
        ...

    def list_replica_sets(self) -> list[ReplicaSet]: ...

    def fracture(self, name: str, deadline_s: float = 60.0) -> None:
        """Mirrorclones only: stop following the source (the point in time is now)."""
        ...

    def resync(self, name: str, deadline_s: float = 300.0) -> None: ...

    def restore(self, name: str, deadline_s: float = 300.0) -> None:
        """Every source of the set back to the set's point in time (Instant Recovery)."""
        ...

    def delete_replica_set(self, name: str, deadline_s: float = 60.0) -> None:
        """Targets returned to their pool; refused while a target is presented."""
        ...

    def present(self, vdisk: str, host: str, lun: int | None = None,
                read_only: bool = False) -> Presentation: ...

    def unpresent(self, vdisk: str, host: str) -> None: ...

    def list_presentations(self, vdisk: str | None = None) -> list[Presentation]: ...

    def close(self) -> None: ...

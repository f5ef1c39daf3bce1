"""The hardware boundary as typed Protocols.

Flows and tasks only ever see these; the real adapters (pyVmomi, pywbem, oracledb) live
in sibling modules and are chosen by configuration. Every method may raise the errors of
`dpflow.errors`: TransientError (retry), PermanentError (give up), NotFound/UserError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field


class DiskInfo(BaseModel):
    """One virtual disk as the hypervisor describes it."""

    key: int
    label: str
    capacity_bytes: int
    datastore: str
    file_name: str = Field(description="descriptor path, e.g. '[LocalDS_0] vm1/disk1.vmdk'")
    controller_key: int | None = None
    unit_number: int | None = None


class VmInfo(BaseModel):
    """What a backup needs to know about a VM, and what a restore needs to rebuild it."""

    name: str
    moref: str
    power_state: str
    datastore: str
    num_cpu: int = 1
    memory_mb: int = 128
    guest_id: str = "otherGuest"
    disks: list[DiskInfo] = []


class SnapshotRef(BaseModel):
    moref: str
    name: str
    vm_moref: str
    quiesced: bool


@runtime_checkable
class DiskReader(Protocol):
    """A frozen disk read by ranges (the 'vLUN mount' of the proxy)."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (fewer only at the end of the disk)."""
        ...

    def close(self) -> None: ...


class Hypervisor(Protocol):
    """A vCenter or standalone ESX host."""

    def check(self) -> None:
        """Log in and prove the endpoint is usable; raise UserError with a clear line if not."""
        ...

    def find_vm(self, name: str) -> VmInfo: ...

    def create_snapshot(self, vm: VmInfo, name: str, quiesce: bool) -> SnapshotRef: ...

    def remove_snapshot(self, snap: SnapshotRef) -> None: ...

    def list_snapshots(self, vm: VmInfo) -> list[SnapshotRef]: ...

    def snapshot_disks(self, snap: SnapshotRef) -> list[DiskInfo]:
        """The disks as frozen in the snapshot (their backing no longer changes)."""
        ...

    def datastore_free_bytes(self, datastore: str) -> int: ...

    def open_disk(self, disk: DiskInfo) -> DiskReader: ...

    def create_vm(self, spec: VmInfo, name: str) -> VmInfo:
        """Register a new VM with the spec's hardware and empty disks of the spec's sizes."""
        ...

    def write_disk(self, disk: DiskInfo, blocks: Iterable[bytes]) -> None:
        """Replace the disk's whole content by the concatenation of `blocks`."""
        ...

    def power_on(self, vm: VmInfo) -> None: ...

    def power_off(self, vm: VmInfo) -> None: ...

    def destroy_vm(self, vm: VmInfo) -> None: ...

    def close(self) -> None: ...

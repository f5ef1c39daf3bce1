"""The storage array boundary as a typed Protocol (to be merged into drivers/protocols.py).

Contract (every implementation, checked by tests/conformance/test_array_protocol.py):
- Objects are named: vdisks, hosts and replica sets by their names on the array.
- A replica set is N vdisks replicated as ONE consistency group: one point in time for
  all members even while hosts write.
- Long operations wait for the array's job up to `deadline_s`; running past it raises
  TransientError (the job may still finish: look again by name, the calls are
  idempotent only where they say so).
- Errors: NotFound / UserError for bad names and refusals caused by the request (name
  clash, illegal state change), TransientError for what may heal (busy, in use,
  timeouts, lost connections), PermanentError for the rest. Messages keep the array's
  own words.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel


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

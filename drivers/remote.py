"""The remote replication boundary (array-to-array mirroring of DR groups) as a Protocol.

Contract (every implementation, checked by tests/conformance/test_array_remote.py):
- A DR group is a consistency group of copy sets replicated to a named remote array; its
  write mode, failsafe, suspend and failover act on the whole group.
- Each side answers for itself: `get_dr_group` on either array tells that array's role.
- Operations read the group's state first and do nothing when it is already as asked
  (suspend when suspended, failover when this side already failed over, failback when
  home is the source), so a flow re-run after a crash continues where it stopped.
- Refusals keep the array's words: failover at the source side or while suspended,
  failback sooner than 15 minutes after a failover (UserError); an unreachable peer for
  an operation that needs it (TransientError).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class DrMode(StrEnum):
    SYNC = "sync"  # acknowledged when in both arrays
    ASYNC = "async"  # acknowledged at once, replicated from the log
    ENHANCED = "enhanced"  # async with the log as a journal on disk


class DrRole(StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"


class DrMember(BaseModel):
    local: str  # vdisk on this array
    remote: str  # its copy on the other array


class DrGroupInfo(BaseModel):
    """One DR group as one of its two arrays reports it now."""

    name: str
    role: DrRole
    local_array: str
    remote_array: str
    home: str
    mode: DrMode
    failsafe: bool
    suspended: bool
    state: str  # normal | copying | merging | logging | suspended | failsafe-locked
    copy_state: int  # SMI-S CopyState as the array said
    sync_state: int  # SMI-S SyncState as the array said
    members: list[DrMember]
    log_bytes: int = 0
    log_capacity: int = 0
    log_writes: int = 0
    lag_ms: int = 0  # age of the oldest write not yet at the destination
    pending_blocks: int = 0  # a full or delta copy still to send
    writes_applied: int = 0  # destination: writes received (source: writes numbered)
    generation: int = 0  # failovers so far
    since_failover_s: int | None = None
    link_up: bool = True
    full_copies: int = 0

    @property
    def in_sync(self) -> bool:
        return self.state == "normal" and self.log_writes == 0 and self.pending_blocks == 0


@runtime_checkable
class RemoteReplication(Protocol):
    """The DR group operations of an array that mirrors to another one."""

    def list_remote_arrays(self) -> list[str]: ...

    def create_dr_group(self, name: str, vdisks: list[str], remote_array: str,
                        mode: DrMode = DrMode.SYNC, failsafe: bool = False,
                        remote_pool: str | None = None,
                        deadline_s: float = 300.0) -> DrGroupInfo:
        """Copies of `vdisks` (same names) made on `remote_array`; idempotent by name."""
        ...

    def get_dr_group(self, name: str) -> DrGroupInfo:
        """NotFound if this array holds no half of it."""
        ...

    def list_dr_groups(self) -> list[DrGroupInfo]: ...

    def set_dr_mode(self, name: str, mode: DrMode | None = None,
                    failsafe: bool | None = None) -> DrGroupInfo: ...

    def suspend_dr_group(self, name: str) -> DrGroupInfo: ...

    def resume_dr_group(self, name: str) -> DrGroupInfo: ...

    def failover_dr_group(self, name: str) -> DrGroupInfo:
        """Issued at the destination: it becomes the source (the old source, if it can be
        reached, becomes the destination). A no-op where this side already failed over."""
        ...

    def failback_dr_group(self, name: str) -> DrGroupInfo:
        """Return the source role to the home array (a planned failover in reverse)."""
        ...

    def swap_dr_group(self, name: str) -> DrGroupInfo:
        """Planned role reversal; refused unless in sync."""
        ...

    def delete_dr_group(self, name: str) -> None:
        """Both halves go (issued at the source); the vdisks stay. No-op if absent."""
        ...

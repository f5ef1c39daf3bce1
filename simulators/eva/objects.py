"""The array's objects and its refusals, shared by the model and Business Copy."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators.eva.disks import BLOCK, Disk

KINDS = ("snapshot", "vsnap", "snapclone", "mirrorclone")
FAILED, INVALID, IN_USE = 4, 5, 6
UNREACHABLE = 3  # SMI-S 'Timeout': the peer array did not answer over the link


class Refusal(Exception):
    """The array said no; `rc` is the SMI-S return code, the message the array's words."""

    def __init__(self, rc: int, words: str) -> None:
        super().__init__(words)
        self.rc = rc
        self.words = words


class Missing(Refusal):
    """A named object does not exist (CIM_ERR_NOT_FOUND on the CIM face)."""

    def __init__(self, words: str) -> None:
        super().__init__(INVALID, words)


@dataclass
class Pool:
    name: str
    capacity: int
    filled: int = 0  # bytes taken by the "pool fills up" fault


@dataclass
class VDisk:
    name: str
    id: str
    size: int
    pool: str
    role: str = "vdisk"  # or one of KINDS when it is a replica target
    disk: Disk = field(repr=False, default=None)  # type: ignore[assignment]

    def reserved(self) -> int:
        return len(self.disk.own) * BLOCK if self.role == "vsnap" else self.size


@dataclass
class Pair:
    """A source/target replica pair with its state and the blocks changed since its time."""

    id: str
    kind: str
    source: str
    target: str
    state: str  # established | synchronized | fractured | broken
    set_name: str
    ready_at: float = 0.0  # copy finishes (as the array reports it) at this clock time
    changed: set[int] = field(default_factory=set)


@dataclass
class ReplicaSet:
    name: str
    kind: str
    pairs: list[str]
    source_group: str | None = None

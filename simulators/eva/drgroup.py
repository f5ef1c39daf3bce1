"""A Continuous Access DR group as one array holds it, and how it is persisted.

Why both arrays hold a record: each side answers for itself (role, generation, what it
applied), the way each EVA reports its half of a DR group. The source side owns the
write history log (ordered writes not yet at the destination) and the set of blocks a
full or delta copy still has to send (normalisation); while that set is not empty the
destination is inconsistent. `generation` counts failovers: when both sides claim to be
the source (a failover while the link was down), the higher generation wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.eva.disks import BLOCK

MODES = ("sync", "async", "enhanced")
FAILBACK_GUARD_S = 900.0  # no failback sooner than 15 minutes after a failover
DEFAULT_LOG = 64 * BLOCK


@dataclass
class LogEntry:
    seq: int
    member: int
    block: int
    data: bytes  # the bytes the host wrote, at `offset` inside the block
    at: float  # array clock when the host wrote it
    offset: int = 0


@dataclass
class DrGroup:
    name: str
    role: str  # source | destination
    peer: str  # the other array's name
    members: list[list[str]]  # [local vdisk, remote vdisk], same order on both sides
    mode: str = "sync"
    failsafe: bool = False
    suspended: bool = False
    home: str = ""  # the preferred source array
    generation: int = 0
    failover_at: float | None = None
    log_capacity: int = DEFAULT_LOG
    seq: int = 0  # source: last host write numbered; destination: last write applied
    consistent: bool = True  # destination: False while a copy is in progress
    link_up: bool = True  # as this side last saw it
    merging: bool = False  # source: the log is draining after a link loss or a suspend
    failsafe_locked: bool = False
    full_copies: int = 0  # log overflows / restarts that forced a full copy
    last_received_at: float | None = None
    remote_ids: list[str] = field(default_factory=list)  # the peer's vdisk ids (its WWNs)
    log: list[LogEntry] = field(default_factory=list)
    pending: set[tuple[int, int]] = field(default_factory=set)  # (member, block) to copy
    budget: float = 0.0
    last_pump: float = 0.0

    def member_index(self, vdisk: str) -> int | None:
        for i, (local, _) in enumerate(self.members):
            if local == vdisk:
                return i
        return None

    def log_bytes(self) -> int:
        return sum(len(e.data) for e in self.log)

    def state(self) -> str:
        """What the array shows for the group, in the EVA's terms."""
        if self.role == "destination":
            if not self.consistent:
                return "copying"
            return "suspended" if self.suspended else "normal"
        if self.failsafe_locked:
            return "failsafe-locked"
        if self.suspended:
            return "suspended"
        if self.pending:
            return "copying"
        if not self.link_up:
            return "logging"
        if self.merging and self.log:
            return "merging"
        return "normal"

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("log", "pending")}
        d["pending"] = sorted(self.pending)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DrGroup:
        d = dict(d)
        pending = {(int(m), int(b)) for m, b in d.pop("pending", [])}
        g = cls(**d)
        g.pending = pending
        return g


def save_logs(root: Path, groups: dict[str, DrGroup]) -> None:
    """Each source group's write history log, beside state.json (written atomically)."""
    folder = root / "ca"
    folder.mkdir(exist_ok=True)
    for g in groups.values():
        path = folder / f"{g.name}.log"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for e in g.log:
                f.write(_entry_bytes(e))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    for stale in folder.glob("*.log"):
        if stale.stem not in groups:
            stale.unlink()


def _entry_bytes(e: LogEntry) -> bytes:
    head = json.dumps([e.seq, e.member, e.block, len(e.data), e.at, e.offset]).encode()
    return head + b"\n" + e.data


def append_journal(root: Path, name: str, e: LogEntry) -> None:
    """Enhanced asynchronous mode: each logged write goes to the group's log file at
    once, so a crashed array restarts with its log (save_logs compacts the file)."""
    folder = root / "ca"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{name}.log", "ab") as f:
        f.write(_entry_bytes(e))


def load_log(root: Path, name: str) -> list[LogEntry]:
    path = root / "ca" / f"{name}.log"
    if not path.exists():
        return []
    raw, out, pos = path.read_bytes(), [], 0
    while pos < len(raw):
        nl = raw.index(b"\n", pos)
        seq, member, block, n, at, offset = json.loads(raw[pos:nl])
        out.append(LogEntry(seq, member, block, raw[nl + 1:nl + 1 + n], at, offset))
        pos = nl + 1 + n
    return out

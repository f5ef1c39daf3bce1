"""Which chunks of a frozen disk must be read: the CBT integrity guard.

A full reads only allocated areas; an incremental only the chunks CBT says changed,
taking every other chunk from the previous version's map. Anything that makes the CBT
answer untrustworthy (tracking off, changeId reset or unknown, disk resized or replaced,
a sampled unchanged chunk that did change) turns that disk into a full read, and the
reason is written into the version: never a silent gap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dpflow.store import DiskManifest
from dpflow.store.pipeline import RangeReader, chunks_touching
from drivers.protocols import CbtUnusable, DiskInfo, Hypervisor, SnapshotRef


@dataclass
class ReadPlan:
    only: list[int] | None  # None = every chunk
    base: list[str | None] | None
    full_reason: str | None  # None = incremental

    @property
    def incremental(self) -> bool:
        return self.full_reason is None


def _full(hv: Hypervisor, snap: SnapshotRef, disk: DiskInfo, chunk_size: int,
          reason: str) -> ReadPlan:
    if disk.change_id:
        try:
            areas = hv.changed_areas(snap, disk, "*")
            return ReadPlan(chunks_touching(areas, chunk_size, disk.capacity_bytes), None, reason)
        except CbtUnusable as exc:
            reason = f"{reason}; allocated areas unknown ({exc}), every chunk read"
    return ReadPlan(None, None, reason)


def plan_read(hv: Hypervisor, snap: SnapshotRef, disk: DiskInfo, prev: DiskManifest | None,
              chunk_size: int) -> ReadPlan:
    if prev is None:
        return _full(hv, snap, disk, chunk_size, "first backup of this disk")
    why = None
    if not disk.change_id:
        why = "change tracking is off"
    elif prev.capacity_bytes != disk.capacity_bytes:
        why = f"disk resized ({prev.capacity_bytes:,} → {disk.capacity_bytes:,} bytes)"
    elif prev.chunk_size != chunk_size:
        why = "store chunk size changed"
    elif not prev.change_id:
        why = "previous version has no changeId"
    if why or not prev.change_id:
        return _full(hv, snap, disk, chunk_size, why or "previous version has no changeId")
    try:
        areas = hv.changed_areas(snap, disk, prev.change_id)
    except CbtUnusable as exc:
        return _full(hv, snap, disk, chunk_size, f"CBT cannot answer since the last version "
                                                 f"({exc})")
    return ReadPlan(chunks_touching(areas, chunk_size, disk.capacity_bytes), prev.chunks, None)


def sample_unchanged(reader: RangeReader, plan: ReadPlan, id_of, chunk_size: int,  # noqa: ANN001
                     samples: int, seed: int | None = None) -> list[int]:
    """Re-read up to `samples` chunks CBT calls unchanged; the indexes that differ."""
    if not plan.incremental or not samples or plan.base is None:
        return []
    changed = set(plan.only or [])
    unchanged = [i for i in range(len(plan.base)) if i not in changed]
    rng = random.Random(seed)
    picks = unchanged if samples >= len(unchanged) else rng.sample(unchanged, samples)
    bad = []
    for i in sorted(picks):
        length = min(chunk_size, reader.size - i * chunk_size)
        data = reader.read(i * chunk_size, length)
        got = None if data.count(0) == len(data) else id_of(data)
        if got != plan.base[i]:
            bad.append(i)
    return bad

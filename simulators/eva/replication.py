"""Business Copy on the model: replica sets, the pair state machine, restore.

Why a separate mixin: the rules of replicas (which kind may fracture, when a restore is
allowed, what a consistency group guarantees) are the part of the array the driver most
depends on; they read best alone. Every entry point takes the array lock.

Metadata-only here: creating a snapshot/vsnap (and the point in time of every kind),
fracture, detach, deleting a replica. Delta-only (bytes changed since the point in time,
never the whole vdisk): restore, resync. Sparse full copy (allocated blocks only): the
background copy of a snapclone and the normalisation of a mirrorclone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulators.eva.objects import (
    FAILED,
    IN_USE,
    INVALID,
    KINDS,
    Missing,
    Pair,
    Refusal,
    ReplicaSet,
    VDisk,
)

if TYPE_CHECKING:
    from simulators.eva.model import EvaArray

OPERATIONS = ("fracture", "resync", "restore", "detach", "delete")


class BusinessCopy:
    """Replica operations of `EvaArray` (mixed in; `self` is the array)."""

    def create_replica_set(self: EvaArray, name: str, sources: list[str], kind: str,
                           pool: str | None = None) -> ReplicaSet:
        """Targets for all `sources` at one point in time (one lock across members)."""
        with self.lock:
            if kind not in KINDS:
                raise Refusal(INVALID, f"unknown replica kind '{kind}'")
            if not name or name in self.sets or name in self.groups:
                raise Refusal(INVALID, f"a replica set or group named '{name}' already exists")
            if not sources or len(set(sources)) != len(sources):
                raise Refusal(INVALID, "a replica set needs distinct source virtual disks")
            srcs = [self.vdisk(s) for s in sources]
            for s in srcs:
                if s.role != "vdisk":
                    raise Refusal(INVALID, f"'{s.name}' is a {s.role}; Business Copy cannot "
                                           "replicate a replica")
                self._free_name(f"{name}-{s.name}")
            need: dict[str, int] = {}
            for s in srcs:
                target_pool = pool or s.pool
                self._pool(target_pool)
                need[target_pool] = need.get(target_pool, 0) + (0 if kind == "vsnap" else s.size)
            for p, nbytes in need.items():
                self._need_space(p, nbytes, f"{kind} set '{name}'")
            rs = ReplicaSet(name, kind, [])
            ready = self.clock.now() + self.job_seconds
            for s in srcs:
                t = self._new_vdisk(f"{name}-{s.name}", s.size, pool or s.pool, kind, s.disk)
                state = {"mirrorclone": "synchronized", "snapclone": "fractured"}.get(
                    kind, "established")
                pair = Pair(self.next_id("SYNC"), kind, s.name, t.name, state, name, ready)
                self.pairs[pair.id] = pair
                rs.pairs.append(pair.id)
            self.sets[name] = rs
            self.save()
        if kind in ("snapclone", "mirrorclone"):
            for pid in rs.pairs:
                self._copy_full(pid)
            self.save()
        return rs

    def _copy_full(self: EvaArray, pair_id: str) -> None:
        """Make a clone independent: copy the source's allocated blocks it lacks.

        Runs outside the creation lock, one block per lock hold, so host writers go on;
        copy-on-write keeps the point in time meanwhile.
        """
        with self.lock:
            p = self.pairs[pair_id]
            blocks = sorted(self.vdisks[p.source].disk.allocated_blocks())
        for b in blocks:
            with self.lock:
                if pair_id not in self.pairs:
                    return
                src, tgt = self.vdisks[p.source].disk, self.vdisks[p.target].disk
                if not tgt.owns(b):
                    tgt.put_block(b, src.read_block(b))
        with self.lock:
            if pair_id in self.pairs:
                self.vdisks[p.target].disk.detach()

    def pair_status(self: EvaArray, p: Pair) -> str:
        """The state as reported: a clone still copying says so."""
        copying = self.vdisks[p.target].disk.backing is not None or \
            self.clock.now() < p.ready_at
        if p.kind in ("snapclone", "mirrorclone") and p.state != "broken" and copying:
            return "copying"
        return p.state

    def replica_set(self: EvaArray, name: str) -> ReplicaSet:
        if name not in self.sets:
            raise Missing(f"replica set '{name}' does not exist")
        return self.sets[name]

    def pairs_of(self: EvaArray, set_or_pair: str) -> list[Pair]:
        if set_or_pair in self.sets:
            return [self.pairs[i] for i in self.sets[set_or_pair].pairs]
        if set_or_pair in self.pairs:
            return [self.pairs[set_or_pair]]
        raise Missing(f"replica set or pair '{set_or_pair}' does not exist")

    def modify(self: EvaArray, set_or_pair: str, operation: str) -> None:
        """Apply one state change to a pair or to every pair of a set, all or none."""
        with self.lock:
            if operation not in OPERATIONS:
                raise Refusal(INVALID, f"operation '{operation}' is not supported")
            pairs = self.pairs_of(set_or_pair)
            for p in pairs:
                self._check(p, operation)
            for p in pairs:
                getattr(self, f"_do_{operation}")(p)
            self.save()

    def delete_replica_set(self: EvaArray, name: str) -> None:
        self.modify(name, "delete")

    def _check(self: EvaArray, p: Pair, op: str) -> None:
        status = self.pair_status(p)
        src, tgt = self.vdisks[p.source], self.vdisks[p.target]
        what = f"{p.kind} '{p.target}' ({status})"
        if op == "fracture" and (p.kind != "mirrorclone" or status != "synchronized"):
            raise Refusal(INVALID, f"illegal state change: cannot fracture {what}")
        if op == "resync":
            if p.kind != "mirrorclone" or status != "fractured":
                raise Refusal(INVALID, f"illegal state change: cannot resync {what}")
            self._not_presented(tgt, "resynchronised")
        if op == "restore":
            if status in ("synchronized", "broken", "copying"):
                raise Refusal(INVALID, f"illegal state change: cannot restore from {what}")
            self._not_presented(src, "restored")
        if op == "detach" and (p.kind not in ("snapclone", "mirrorclone")
                               or status != "fractured"):
            raise Refusal(INVALID, f"illegal state change: cannot detach {what}")
        if op == "delete":
            self._not_presented(tgt, "deleted")

    def _do_fracture(self: EvaArray, p: Pair) -> None:
        p.state = "fractured"
        p.changed = set()

    def _do_resync(self: EvaArray, p: Pair) -> None:
        src, tgt = self.vdisks[p.source], self.vdisks[p.target]
        for b in sorted(p.changed):
            tgt.disk.put_block(b, src.disk.read_block(b))
        p.changed = set()
        p.state = "synchronized"

    def _do_restore(self: EvaArray, p: Pair) -> None:
        """Copy back only what changed on either side since the point in time."""
        src, tgt = self.vdisks[p.source], self.vdisks[p.target]
        for b in sorted(p.changed):
            self.write_block(src, b, tgt.disk.read_block(b))
        p.changed = set()

    def _do_detach(self: EvaArray, p: Pair) -> None:
        self.vdisks[p.target].role = "vdisk"
        self._forget(p)

    def _do_delete(self: EvaArray, p: Pair) -> None:
        tgt = self.vdisks[p.target]
        self._forget(p)
        self._drop_vdisk(tgt)

    def _forget(self: EvaArray, p: Pair) -> None:
        del self.pairs[p.id]
        rs = self.sets[p.set_name]
        rs.pairs.remove(p.id)
        if not rs.pairs:
            del self.sets[rs.name]

    def replica_info(self: EvaArray, p: Pair) -> dict[str, Any]:
        tgt: VDisk = self.vdisks[p.target]
        return {"id": p.id, "kind": p.kind, "source": p.source, "target": tgt.name,
                "status": self.pair_status(p), "set": p.set_name}


__all__ = ["BusinessCopy", "OPERATIONS", "FAILED", "IN_USE"]

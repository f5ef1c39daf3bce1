"""Continuous Access on the model: DR groups replicated to a peer array over a link.

Why the data crosses a `Link` and nothing else: the destination's bytes must be what
the link delivered, so an async group that loses its source loses exactly the unsent
tail of its write history log, and a sync group loses nothing. The rules copied from
the EVA (see drgroup.py for the record):
- sync: a host write is sent before it is acknowledged; async / enhanced: it is logged
  and the pump sends the log in order (the destination is always a write-order
  consistent image, just older).
- link down or suspend: writes go to the log (logging); when the link returns / on
  resume the log is sent in order (merging). Failsafe on: link down stops host I/O to
  every member (failsafe-locked). Log full: the log is dropped and every allocated block
  is copied (a full copy); the destination is inconsistent until it ends.
- hosts may write only to a source; failover is issued on the destination, refused while
  suspended; failback (return to the home array) and swap need the group in sync, and
  failback is refused sooner than 15 minutes after a failover.
Messages to the peer are sent with the lock held for sync writes and admin operations,
and without it by the pump, so an async group's host I/O never waits for the link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulators.eva.drgroup import MODES, DrGroup, LogEntry, append_journal
from simulators.eva.link import Link, LinkDown
from simulators.eva.objects import FAILED, INVALID, UNREACHABLE, Missing, Refusal

if TYPE_CHECKING:
    from simulators.eva.model import EvaArray

OPERATIONS = ("suspend", "resume", "failover", "failback", "swap")


class ContinuousAccess:
    """DR groups of `EvaArray` (mixed in; `self` is the array)."""

    # ---- links and groups -------------------------------------------------------------
    def connect_peer(self: EvaArray, peer: str, link: Link) -> None:
        with self.lock:
            self.links[peer] = link

    def _link(self: EvaArray, peer: str) -> Link:
        if peer not in self.links:
            raise Refusal(FAILED, f"no inter-site link from {self.name} to array '{peer}'")
        return self.links[peer]

    def dr_group(self: EvaArray, name: str) -> DrGroup:
        if name not in self.dr_groups:
            raise Missing(f"DR group '{name}' does not exist on {self.name}")
        return self.dr_groups[name]

    def ca_group_of(self: EvaArray, vdisk: str) -> DrGroup | None:
        for g in self.dr_groups.values():
            if g.member_index(vdisk) is not None:
                return g
        return None

    def create_dr_group(self: EvaArray, name: str, members: list[str], peer: str,
                        mode: str = "sync", failsafe: bool = False, pool: str | None = None,
                        log_capacity: int | None = None) -> DrGroup:
        """Destination vdisks (same names) made on `peer`, then a full copy starts."""
        with self.lock:
            if mode not in MODES:
                raise Refusal(INVALID, f"write mode '{mode}' is not one of {', '.join(MODES)}")
            if not name or name in self.dr_groups:
                raise Refusal(INVALID, f"a DR group named '{name}' already exists")
            if not members or len(set(members)) != len(members):
                raise Refusal(INVALID, "a DR group needs distinct member virtual disks")
            vds = [self.vdisk(m) for m in members]
            for vd in vds:
                if vd.role != "vdisk" or self.ca_group_of(vd.name):
                    raise Refusal(INVALID, f"'{vd.name}' is already replicated; a copy set "
                                           "needs a plain virtual disk")
            link = self._link(peer)
            g = DrGroup(name, "source", peer, [[v.name, v.name] for v in vds], mode, failsafe,
                        home=self.name, last_pump=self.clock.now())
            if log_capacity:
                g.log_capacity = int(log_capacity)
            g.pending = self._all_blocks(g)
            g.consistent = not g.pending
            try:
                ans = link.send({"op": "create", "group": name, "peer": self.name,
                                 "mode": mode, "failsafe": failsafe, "pool": pool,
                                 "home": self.name, "consistent": g.consistent,
                                 "members": [[v.name, v.size, v.id] for v in vds]})
            except LinkDown as e:
                raise Refusal(UNREACHABLE, f"cannot reach array '{peer}': {e}") from None
            if "refusal" in ans:
                raise Refusal(int(ans["refusal"][0]), ans["refusal"][1])
            g.remote_ids = list(ans["ids"])
            self.dr_groups[name] = g
            self.save()
            return g

    def _all_blocks(self: EvaArray, g: DrGroup) -> set[tuple[int, int]]:
        return {(i, b) for i, (local, _) in enumerate(g.members)
                for b in self.vdisks[local].disk.allocated_blocks()}

    def delete_dr_group(self: EvaArray, name: str) -> None:
        """Both halves go; the vdisks stay as plain vdisks on each array."""
        with self.lock:
            g = self.dr_group(name)
            if g.role != "source":
                raise Refusal(INVALID, f"DR group '{name}' is deleted from its source array "
                                       f"('{g.peer}')")
            try:
                self._link(g.peer).send({"op": "delete", "group": name})
            except LinkDown as e:
                raise Refusal(UNREACHABLE, f"cannot reach array '{g.peer}': {e}") from None
            del self.dr_groups[name]
            self.save()

    def set_dr_mode(self: EvaArray, name: str, mode: str | None = None,
                    failsafe: bool | None = None) -> None:
        with self.lock:
            g = self.dr_group(name)
            if g.role != "source":
                raise Refusal(INVALID, f"DR group '{name}' is changed on its source array "
                                       f"('{g.peer}')")
            if mode is not None and mode != g.mode:
                if mode not in MODES:
                    raise Refusal(INVALID, f"write mode '{mode}' is not one of "
                                           f"{', '.join(MODES)}")
                if g.mode == "sync" and (g.log or g.pending or g.suspended or not g.link_up):
                    raise Refusal(INVALID, f"DR group '{name}' is {g.state()}: the write mode "
                                           "changes to asynchronous only when it is normal")
                g.mode = mode  # async -> sync: writes queue behind the log until it drains
            if failsafe is not None:
                g.failsafe = failsafe
                g.failsafe_locked = g.failsafe_locked and failsafe
            self._tell(g, {"op": "settings", "mode": g.mode, "failsafe": g.failsafe})
            self.save()

    def _tell(self: EvaArray, g: DrGroup, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Best effort: the peer hears it now if the link is up, else at the next hello."""
        try:
            ans = self._link(g.peer).send(dict(msg, group=g.name))
            g.link_up = True
            return ans
        except (LinkDown, Refusal):
            g.link_up = False
            return None

    # ---- the host write path ------------------------------------------------------------
    def ca_check_writable(self: EvaArray, vdisk: str) -> None:
        g = self.ca_group_of(vdisk)
        if g is None:
            return
        if g.role == "destination":
            raise Refusal(INVALID, f"virtual disk '{vdisk}' is a destination of DR group "
                                   f"'{g.name}' and is read-only to hosts")
        if g.failsafe and (g.failsafe_locked or not g.link_up):
            g.failsafe_locked = True
            raise Refusal(FAILED, f"DR group '{g.name}' is failsafe-locked: the destination "
                                  "is unreachable and failsafe is on, host I/O is stopped")

    def ca_replicate(self: EvaArray, vdisk: str, b: int, data: bytes,
                     span: tuple[int, int] | None = None) -> None:
        """Called for every block write to a vdisk, before the local disk changes; only
        the bytes the host wrote (`span` inside the block) are sent or logged."""
        g = self.ca_group_of(vdisk)
        if g is None or g.role != "source":
            return
        m = g.member_index(vdisk)
        assert m is not None
        offset, piece = (span[0], data[span[0]:span[0] + span[1]]) if span else (0, data)
        g.seq += 1
        if g.pending:
            g.pending.add((m, b))
            return
        if g.mode == "sync" and not g.log and not g.suspended and g.link_up:
            try:
                ans = self._link(g.peer).send({"op": "write", "group": g.name, "seq": g.seq,
                                               "member": m, "block": b, "offset": offset,
                                               "generation": g.generation}, piece)
                if ans.get("stale"):
                    g.seq -= 1
                    g.link_up = False  # the next hello settles who is the source
                    raise Refusal(FAILED, f"DR group '{g.name}' was failed over to "
                                          f"'{g.peer}': this side no longer accepts writes")
                return
            except LinkDown:
                self._lost_link(g)
                if g.failsafe:
                    g.seq -= 1
                    raise Refusal(FAILED, f"DR group '{g.name}' is failsafe-locked: the "
                                          "destination is unreachable, host I/O is stopped"
                                  ) from None
        entry = LogEntry(g.seq, m, b, piece, self.clock.now(), offset)
        g.log.append(entry)
        if g.mode == "enhanced":
            append_journal(self.root, g.name, entry)
        if g.log_bytes() > g.log_capacity:
            self._overflow(g)

    def _lost_link(self: EvaArray, g: DrGroup) -> None:
        g.link_up = False
        g.merging = True
        if g.failsafe:
            g.failsafe_locked = True

    def _overflow(self: EvaArray, g: DrGroup) -> None:
        """Log full: drop it and copy every allocated block (a full copy)."""
        g.pending = self._all_blocks(g) | {(e.member, e.block) for e in g.log}
        g.log.clear()
        g.consistent = False
        g.full_copies += 1

    # ---- the pump: log and copies over the link -----------------------------------------
    def ca_pump(self: EvaArray) -> int:
        """Send what the link allows for every source group; returns messages sent."""
        sent = 0
        for name in list(self.dr_groups):
            sent += self._pump_group(name)
        return sent

    def _pump_group(self: EvaArray, name: str) -> int:
        with self.lock:
            g = self.dr_groups.get(name)
            if g is None or g.role != "source" or g.suspended:
                return 0
            link = self._link(g.peer)
            now = self.clock.now()
            bw = link.wire.bandwidth
            g.budget = float("inf") if bw is None else min(
                g.budget + bw * max(0.0, now - g.last_pump), max(bw, 1 << 20))
            g.last_pump = now
            hello = {"op": "hello", "group": name, "generation": g.generation,
                     "failover_at": g.failover_at}
        try:
            ans = link.send(hello)
        except LinkDown:
            with self.lock:
                self._lost_link(g)
            return 0
        with self.lock:
            if ans.get("stale"):  # the peer failed over while we could not see it
                dirty = self._become_destination(g, int(ans["generation"]),
                                                 ans.get("failover_at"))
                g.pending = dirty | self._all_blocks(g)  # reported at the peer's next hello
                g.consistent = False
                self.save()
                return 0
            self._add_dirty(g, ans.get("blocks", []))
            g.link_up, g.failsafe_locked = True, False
            while g.log and g.log[0].seq <= int(ans.get("seq", -1)):
                g.log.pop(0)  # applied already (a journal replayed after a crash)
        sent = 0
        while True:
            with self.lock:
                if self.dr_groups.get(name) is not g or g.role != "source" or g.suspended:
                    return sent
                msg, data, cost = self._next_message(g)
                if msg is None:
                    g.merging = False
                    return sent
                if cost > g.budget:
                    if msg["op"] == "copy":
                        g.pending.add((msg["member"], msg["block"]))
                    return sent
                g.budget -= cost
            try:
                link.send(msg, data)
                sent += 1
            except LinkDown:
                with self.lock:
                    if msg["op"] == "copy":
                        g.pending.add((msg["member"], msg["block"]))
                    self._lost_link(g)
                return sent
            with self.lock:
                if msg["op"] == "write" and g.log and g.log[0].seq == msg["seq"]:
                    g.log.pop(0)

    def _next_message(self: EvaArray, g: DrGroup) -> tuple[dict[str, Any] | None, bytes, int]:
        """The next thing to send (lock held): a pending block, a 'copied' mark, a log entry."""
        if g.pending:
            m, b = min(g.pending)
            g.pending.discard((m, b))
            data = self.vdisks[g.members[m][0]].disk.read_block(b)
            return {"op": "copy", "group": g.name, "member": m, "block": b,
                    "generation": g.generation}, data, len(data)
        if not g.log and g.role == "source" and not g.consistent:
            g.consistent = True  # here: "the peer was told the copy ended"
            return {"op": "copied", "group": g.name, "seq": g.seq}, b"", 0
        if g.log:
            e = g.log[0]
            return {"op": "write", "group": g.name, "seq": e.seq, "member": e.member,
                    "block": e.block, "offset": e.offset, "generation": g.generation}, \
                e.data, len(e.data)
        return None, b"", 0

"""DR group operations (suspend, resume, failover, failback, swap) and the peer's side.

Why the peer's side is here too: every operation is a conversation between the two
halves of a group (a failover demotes the old source if the link lets it; a returning
old source learns it lost by the generation number), and both ends of each message read
best next to each other. `ca_receive` is what the link delivers to; a refusal on the
peer travels back as {"refusal": [rc, words]} and is raised again on the caller's side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulators.eva.drgroup import FAILBACK_GUARD_S, DrGroup
from simulators.eva.link import LinkDown
from simulators.eva.objects import FAILED, INVALID, UNREACHABLE, Refusal
from simulators.eva.remote import OPERATIONS

if TYPE_CHECKING:
    from simulators.eva.model import EvaArray


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


class DrOperations:
    """State changes of DR groups on `EvaArray` (mixed in; `self` is the array)."""

    def modify_dr_group(self: EvaArray, name: str, operation: str) -> None:
        with self.lock:
            if operation not in OPERATIONS:
                raise Refusal(INVALID, f"DR group operation '{operation}' is not supported")
            g = self.dr_group(name)
            getattr(self, f"_dr_{operation}")(g)
            self.save()

    def _ask(self: EvaArray, g: DrGroup, msg: dict[str, Any], doing: str) -> dict[str, Any]:
        """Send to the peer and raise its refusal, or a refusal if the link is down."""
        try:
            ans = self._link(g.peer).send(dict(msg, group=g.name))
        except LinkDown as e:
            g.link_up = False
            raise Refusal(UNREACHABLE, f"cannot {doing} DR group '{g.name}': array '{g.peer}' is "
                                  f"unreachable ({e})") from None
        g.link_up = True
        if "refusal" in ans:
            rc, words = ans["refusal"]
            raise Refusal(int(rc), words)
        return ans

    def _dr_suspend(self: EvaArray, g: DrGroup) -> None:
        if g.suspended:
            raise Refusal(INVALID, f"DR group '{g.name}' is already suspended")
        g.suspended = True
        g.merging = g.role == "source"
        self._tell(g, {"op": "suspend", "value": True})

    def _dr_resume(self: EvaArray, g: DrGroup) -> None:
        if not g.suspended:
            raise Refusal(INVALID, f"DR group '{g.name}' is not suspended")
        g.suspended = False
        self._tell(g, {"op": "suspend", "value": False})

    def _dr_failover(self: EvaArray, g: DrGroup) -> None:
        if g.role == "source":
            raise Refusal(INVALID, f"DR group '{g.name}' is the source on {self.name}: "
                                   f"failover is issued on the destination array ('{g.peer}')")
        if g.suspended:
            raise Refusal(INVALID, f"DR group '{g.name}' is suspended: resume it before "
                                   "failing over")
        self._promote(g, g.generation + 1, self.clock.now())
        ans = self._tell(g, {"op": "demote", "generation": g.generation,
                             "failover_at": g.failover_at})
        if ans is None:
            g.merging = True  # the old source is unreachable: log until it returns
        else:
            self._add_dirty(g, ans.get("blocks", []))

    def _promote(self: EvaArray, g: DrGroup, generation: int, at: float | None) -> None:
        g.role, g.generation, g.failover_at = "source", generation, at
        g.log, g.pending, g.consistent = [], set(), True
        g.suspended = g.failsafe_locked = g.merging = False
        g.budget, g.last_pump = 0.0, self.clock.now()

    def _become_destination(self: EvaArray, g: DrGroup, generation: int,
                            at: float | None) -> set[tuple[int, int]]:
        """Demote this half; the blocks it holds that the new source must overwrite."""
        dirty = {(e.member, e.block) for e in g.log} | g.pending
        g.role, g.generation, g.failover_at = "destination", generation, at
        g.log, g.pending = [], set()
        g.seq = -1  # the new source numbers writes its own way: unknown until it sends
        g.consistent = not dirty
        g.suspended = g.failsafe_locked = g.merging = False
        return dirty

    def _add_dirty(self: EvaArray, g: DrGroup, blocks: list[list[int]]) -> None:
        if blocks:
            g.pending |= {(int(m), int(b)) for m, b in blocks}
            g.consistent = False

    def _in_sync_check(self: EvaArray, g: DrGroup, doing: str) -> None:
        """At the destination: the source has nothing left to send (asked over the link)."""
        if g.suspended:
            raise Refusal(INVALID, f"DR group '{g.name}' is suspended: resume it and let it "
                                   f"merge before {doing}")
        st = self._ask(g, {"op": "status"}, doing)
        if st["log"] or st["pending"] or not g.consistent:
            raise Refusal(INVALID, f"DR group '{g.name}' is not in sync ({st['log']} writes "
                                   f"logged, {st['pending']} blocks to copy): wait for it to "
                                   f"merge before {doing}")

    def _dr_swap(self: EvaArray, g: DrGroup) -> None:
        """Planned role reversal: needs the group in sync and the link up."""
        if g.role == "source":
            self._ask(g, {"op": "run", "operation": "swap"}, "swap")
            return
        self._in_sync_check(g, "swapping")
        self._dr_failover(g)

    def _dr_failback(self: EvaArray, g: DrGroup) -> None:
        """Return to home: a planned failover back, not sooner than 15 min after one."""
        if g.role == "source" and g.home == self.name:
            raise Refusal(INVALID, f"DR group '{g.name}' is already at home on {self.name}")
        if g.failover_at is not None:
            since = self.clock.now() - g.failover_at
            if since < FAILBACK_GUARD_S:
                raise Refusal(INVALID, f"DR group '{g.name}' failed over {_minutes(since)} "
                                       f"ago: failback is allowed 15 minutes after a failover "
                                       f"({_minutes(FAILBACK_GUARD_S - since)} left)")
        if g.role == "source":
            self._ask(g, {"op": "run", "operation": "failback"}, "fail back")
            return
        self._in_sync_check(g, "failing back")
        self._dr_failover(g)

    # ---- what the link delivers ------------------------------------------------------------
    def ca_receive(self: EvaArray, msg: dict[str, Any], data: bytes = b"") -> dict[str, Any]:
        with self.lock:
            try:
                ans = getattr(self, f"_rx_{msg['op']}")(msg, data) or {}
            except Refusal as e:
                return {"refusal": [e.rc, e.words]}
            if msg["op"] not in ("write", "copy", "hello", "status"):
                self.save()
            return ans

    def _rx_create(self: EvaArray, msg: dict[str, Any], _: bytes) -> dict[str, Any]:
        name = msg["group"]
        if name in self.dr_groups:
            raise Refusal(INVALID, f"a DR group named '{name}' already exists on {self.name}")
        pool = msg.get("pool") or next(iter(self.pools), None)
        if pool is None:
            raise Refusal(FAILED, f"array {self.name} has no disk group for the destination")
        made: list[str] = []
        try:
            for vd_name, size, _id in msg["members"]:
                self.create_vdisk(vd_name, int(size), pool)
                made.append(vd_name)
        except Refusal:
            for vd_name in made:
                self._drop_vdisk(self.vdisks[vd_name])
            raise
        g = DrGroup(name, "destination", msg["peer"], [[m, m] for m in made], msg["mode"],
                    bool(msg["failsafe"]), home=msg["home"], consistent=bool(msg["consistent"]))
        g.remote_ids = [m[2] for m in msg["members"]]
        self.dr_groups[name] = g
        return {"ids": [self.vdisks[m].id for m in made]}

    def _rx_delete(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        self.dr_groups.pop(msg["group"], None)

    def _rx_group(self: EvaArray, msg: dict[str, Any]) -> DrGroup:
        return self.dr_group(msg["group"])

    def _stale(self: EvaArray, g: DrGroup, msg: dict[str, Any]) -> dict[str, Any] | None:
        if g.role != "destination" or int(msg.get("generation", 0)) < g.generation:
            return {"stale": True, "generation": g.generation, "failover_at": g.failover_at}
        return None

    def _rx_write(self: EvaArray, msg: dict[str, Any], data: bytes) -> dict[str, Any] | None:
        g = self._rx_group(msg)
        if (stale := self._stale(g, msg)) is not None:
            return stale
        vd, b = self.vdisks[g.members[int(msg["member"])][0]], int(msg["block"])
        offset = int(msg.get("offset", 0))
        if offset or len(data) != vd.disk.block_len(b):  # a partial write: patch the block
            block = bytearray(vd.disk.read_block(b))
            block[offset:offset + len(data)] = data
            data = bytes(block)
        self.write_block(vd, b, data)
        if msg["op"] == "write":
            g.seq = int(msg["seq"])
        g.last_received_at = self.clock.now()
        return None

    def _rx_copy(self: EvaArray, msg: dict[str, Any], data: bytes) -> dict[str, Any] | None:
        g = self._rx_group(msg)
        if self._stale(g, msg) is None:
            g.consistent = False
        return self._rx_write(msg, data)

    def _rx_copied(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        g = self._rx_group(msg)
        g.consistent, g.seq = True, int(msg["seq"])

    def _rx_hello(self: EvaArray, msg: dict[str, Any], _: bytes) -> dict[str, Any]:
        g = self._rx_group(msg)
        gen = int(msg["generation"])
        if g.role == "source" and gen > g.generation:  # we lost a failover while cut off
            dirty = self._become_destination(g, gen, msg.get("failover_at"))
            dirty |= self._all_blocks(g)
            g.consistent = False
            return {"demoted": True, "blocks": sorted(dirty)}
        if g.role == "source":
            return {"stale": True, "generation": g.generation, "failover_at": g.failover_at}
        g.generation = max(g.generation, gen)
        g.link_up = True
        blocks, g.pending = sorted(g.pending), set()  # what a demoted source must get back
        return {"role": g.role, "blocks": blocks, "seq": g.seq}

    def _rx_dirty(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        self._add_dirty(self._rx_group(msg), msg["blocks"])

    def _rx_suspend(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        g = self._rx_group(msg)
        g.suspended = bool(msg["value"])
        g.merging = g.merging or (g.suspended and g.role == "source")

    def _rx_settings(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        g = self._rx_group(msg)
        g.mode, g.failsafe = msg["mode"], bool(msg["failsafe"])

    def _rx_demote(self: EvaArray, msg: dict[str, Any], _: bytes) -> dict[str, Any]:
        g = self._rx_group(msg)
        dirty = self._become_destination(g, int(msg["generation"]), msg.get("failover_at"))
        return {"blocks": sorted(dirty)}

    def _rx_status(self: EvaArray, msg: dict[str, Any], _: bytes) -> dict[str, Any]:
        g = self._rx_group(msg)
        return {"role": g.role, "log": len(g.log), "log_bytes": g.log_bytes(),
                "pending": len(g.pending), "seq": g.seq, "generation": g.generation}

    def _rx_run(self: EvaArray, msg: dict[str, Any], _: bytes) -> None:
        if msg["operation"] not in ("swap", "failback"):
            raise Refusal(INVALID, f"operation '{msg['operation']}' cannot be relayed")
        getattr(self, f"_dr_{msg['operation']}")(self._rx_group(msg))

    # ---- what the array reports ------------------------------------------------------------
    def dr_info(self: EvaArray, name: str) -> dict[str, Any]:
        with self.lock:
            g = self.dr_group(name)
            now = self.clock.now()
            oldest = g.log[0].at if g.log else None
            return {"name": g.name, "role": g.role, "peer": g.peer, "home": g.home,
                    "members": [list(m) for m in g.members], "mode": g.mode,
                    "failsafe": g.failsafe, "suspended": g.suspended, "state": g.state(),
                    "generation": g.generation, "failover_at": g.failover_at,
                    "log_writes": len(g.log), "log_bytes": g.log_bytes(),
                    "log_capacity": g.log_capacity, "pending_blocks": len(g.pending),
                    "seq": g.seq, "consistent": g.consistent, "link_up": g.link_up,
                    "lag_s": 0.0 if oldest is None else max(0.0, now - oldest),
                    "full_copies": g.full_copies,
                    "since_failover_s": None if g.failover_at is None else now - g.failover_at}

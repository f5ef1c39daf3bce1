"""Continuous Access on the EVA model: two arrays, one wire, one injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.eva import EvaArray, ManualClock, Refusal
from simulators.eva.disks import BLOCK
from simulators.eva.link import LocalLink, Wire

MiB = 1 << 20


class Sites:
    def __init__(self, root: Path) -> None:
        self.clock = ManualClock()
        self.wire = Wire()
        self.a = EvaArray(root / "a", clock=self.clock, name="EVA-A")
        self.b = EvaArray(root / "b", clock=self.clock, name="EVA-B")
        for arr in (self.a, self.b):
            arr.add_pool("DG1", 128 * MiB)
            arr.add_host("esx", [f"5000{arr.name[-1]}"])
        self.a.connect_peer("EVA-B", LocalLink(self.b, self.wire))
        self.b.connect_peer("EVA-A", LocalLink(self.a, self.wire))

    def pump(self) -> None:
        for _ in range(3):
            self.a.ca_pump()
            self.b.ca_pump()


@pytest.fixture
def s(tmp_path: Path) -> Sites:
    sites = Sites(tmp_path)
    sites.a.create_vdisk("vd1", 4 * MiB, "DG1")
    sites.a.create_vdisk("vd2", 4 * MiB, "DG1")
    return sites


def blk(n: int) -> bytes:
    return bytes([n % 251 + 1]) * BLOCK


def test_initial_copy_makes_the_destination_consistent(s: Sites) -> None:
    s.a.write("vd1", 0, blk(1))
    s.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B", mode="sync")
    assert s.b.dr_info("dr")["state"] == "copying" and s.a.dr_info("dr")["state"] == "copying"
    s.pump()
    assert s.b.read("vd1", 0, BLOCK) == blk(1)
    assert s.a.dr_info("dr")["state"] == "normal" and s.b.dr_info("dr")["consistent"]
    assert s.b.dr_info("dr")["role"] == "destination"


def test_sync_loses_nothing_and_destination_is_read_only(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="sync")
    s.pump()
    for i in range(3):
        s.a.write("vd1", i * BLOCK, blk(i))
    # no pump: a sync write is at the destination when the host gets its answer
    assert s.b.read("vd1", 0, 3 * BLOCK) == blk(0) + blk(1) + blk(2)
    with pytest.raises(Refusal, match="read-only to hosts"):
        s.b.write("vd1", 0, b"x")


def test_async_loses_exactly_the_unsent_tail(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B", mode="async")
    s.pump()
    s.wire.set(bandwidth=2 * BLOCK)  # two blocks per second of the clock
    for i in range(4):
        s.a.write("vd1" if i % 2 == 0 else "vd2", (i // 2) * BLOCK, blk(10 + i))
    assert s.a.dr_info("dr")["log_writes"] == 4
    s.clock.advance(1.0)
    s.a.ca_pump()
    info = s.a.dr_info("dr")
    assert info["log_writes"] == 2 and s.b.dr_info("dr")["seq"] == 2
    # site A is lost now: B holds the first two writes, in order, and nothing after
    assert s.b.read("vd1", 0, BLOCK) == blk(10) and s.b.read("vd2", 0, BLOCK) == blk(11)
    assert s.b.read("vd1", BLOCK, 1) == b"\0" and s.b.read("vd2", BLOCK, 1) == b"\0"


def test_link_down_logs_then_merges_in_order(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="sync")
    s.pump()
    s.wire.set(up=False)
    s.a.write("vd1", 0, blk(1))
    s.a.write("vd1", 0, blk(2))
    info = s.a.dr_info("dr")
    assert info["state"] == "logging" and info["log_writes"] == 2
    assert info["log_bytes"] == 2 * BLOCK
    assert s.b.read("vd1", 0, 1) == b"\0"
    s.wire.set(up=True)
    s.pump()
    assert s.b.read("vd1", 0, BLOCK) == blk(2) and s.a.dr_info("dr")["state"] == "normal"


def test_log_full_forces_a_full_copy_destination_inconsistent_until_done(s: Sites) -> None:
    s.a.write("vd2", 0, blk(7))
    s.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B", mode="async", log_capacity=2 * BLOCK)
    s.pump()
    s.wire.set(up=False)
    for i in range(3):
        s.a.write("vd1", i * BLOCK, blk(i))
    info = s.a.dr_info("dr")
    assert info["full_copies"] == 1 and info["log_writes"] == 0 and info["state"] == "copying"
    s.wire.set(up=True, bandwidth=BLOCK)
    s.clock.advance(1.0)
    s.a.ca_pump()  # one block crosses: the destination is now a mix, inconsistent
    assert s.b.dr_info("dr")["state"] == "copying" and not s.b.dr_info("dr")["consistent"]
    s.wire.set(bandwidth=None)
    s.pump()
    assert s.b.dr_info("dr")["consistent"] and s.b.read("vd1", 2 * BLOCK, BLOCK) == blk(2)
    assert s.b.read("vd2", 0, BLOCK) == blk(7)


def test_failsafe_stops_host_io_when_the_link_is_down(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B", mode="sync", failsafe=True)
    s.pump()
    s.wire.set(up=False)
    with pytest.raises(Refusal, match="failsafe-locked"):
        s.a.write("vd1", 0, b"x")
    with pytest.raises(Refusal, match="failsafe-locked"):  # every member
        s.a.write("vd2", 0, b"x")
    assert s.a.read("vd1", 0, 1) == b"\0"
    s.wire.set(up=True)
    s.pump()
    s.a.write("vd1", 0, b"y")
    assert s.b.read("vd1", 0, 1) == b"y"


def test_failover_only_at_destination_and_not_while_suspended(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B")
    s.pump()
    with pytest.raises(Refusal, match="failover is issued on the destination"):
        s.a.modify_dr_group("dr", "failover")
    s.a.modify_dr_group("dr", "suspend")
    assert s.b.dr_info("dr")["suspended"]
    s.a.write("vd1", 0, blk(3))
    assert s.a.dr_info("dr")["state"] == "suspended" and s.a.dr_info("dr")["log_writes"] == 1
    with pytest.raises(Refusal, match="suspended: resume it"):
        s.b.modify_dr_group("dr", "failover")
    s.a.modify_dr_group("dr", "resume")
    s.pump()
    assert s.b.read("vd1", 0, BLOCK) == blk(3)


def test_planned_failover_swaps_roles_and_failback_waits_15_minutes(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="async")
    s.a.write("vd1", 0, blk(1))
    s.pump()
    s.b.modify_dr_group("dr", "failover")
    assert (s.a.dr_info("dr")["role"], s.b.dr_info("dr")["role"]) == ("destination", "source")
    with pytest.raises(Refusal, match="read-only to hosts"):  # the old source is fenced
        s.a.write("vd1", 0, b"split")
    s.b.write("vd1", BLOCK, blk(2))
    s.pump()
    assert s.a.read("vd1", BLOCK, BLOCK) == blk(2)  # replication reversed
    s.clock.advance(600)
    with pytest.raises(Refusal, match=r"failback is allowed 15 minutes .*5 min 00 s left"):
        s.a.modify_dr_group("dr", "failback")
    s.clock.advance(300)
    s.a.modify_dr_group("dr", "failback")
    assert s.a.dr_info("dr")["role"] == "source" and s.b.dr_info("dr")["role"] == "destination"
    with pytest.raises(Refusal, match="already at home"):
        s.a.modify_dr_group("dr", "failback")


def test_unplanned_failover_then_old_source_returns_and_is_overwritten(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="async")
    s.a.write("vd1", 0, blk(1))
    s.pump()
    s.wire.set(up=False)  # site A cut off; it keeps writing (failsafe off): split brain
    s.a.write("vd1", 0, blk(9))
    s.a.write("vd1", 2 * BLOCK, blk(9))
    s.b.modify_dr_group("dr", "failover")  # at B, A unreachable
    assert s.b.dr_info("dr")["role"] == "source" and s.a.dr_info("dr")["role"] == "source"
    s.b.write("vd1", BLOCK, blk(5))
    s.wire.set(up=True)
    s.pump()
    s.pump()
    assert s.a.dr_info("dr")["role"] == "destination"
    assert s.a.read("vd1", 0, 3 * BLOCK) == blk(1) + blk(5) + bytes(BLOCK)
    assert s.a.dr_info("dr")["consistent"]


def test_swap_refused_until_in_sync(s: Sites) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="async")
    s.pump()
    s.a.write("vd1", 0, blk(1))
    with pytest.raises(Refusal, match="not in sync"):
        s.a.modify_dr_group("dr", "swap")
    s.pump()
    s.a.modify_dr_group("dr", "swap")
    assert s.b.dr_info("dr")["role"] == "source"


def test_mode_change_rules_and_state_survives_restart(s: Sites, tmp_path: Path) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="sync")
    s.pump()
    s.wire.set(up=False)
    s.a.write("vd1", 0, blk(4))
    with pytest.raises(Refusal, match="only when it is normal"):
        s.a.set_dr_mode("dr", mode="async")
    s.a.close()
    a2 = EvaArray(tmp_path / "a", clock=s.clock)
    assert a2.dr_info("dr")["log_writes"] == 1 and a2.dr_info("dr")["full_copies"] == 0
    a2.connect_peer("EVA-B", LocalLink(s.b, s.wire))
    s.wire.set(up=True)
    a2.ca_pump()
    assert s.b.read("vd1", 0, BLOCK) == blk(4)
    with pytest.raises(Refusal, match="member of DR group"):
        a2.delete_vdisk("vd1")


def test_the_log_holds_only_the_bytes_written(s: Sites) -> None:
    s.a.write("vd1", 0, blk(1))
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode="async")
    s.pump()
    s.a.write("vd1", 100, b"abcd")
    s.a.write("vd1", BLOCK - 2, b"wxyz")  # across a block boundary: two entries
    info = s.a.dr_info("dr")
    assert (info["log_writes"], info["log_bytes"]) == (3, 8)
    s.pump()
    want = bytearray(blk(1) + bytes(BLOCK))
    want[100:104], want[BLOCK - 2:BLOCK + 2] = b"abcd", b"wxyz"
    assert s.b.read("vd1", 0, 2 * BLOCK) == bytes(want)


@pytest.mark.parametrize("mode,full_copies", [("enhanced", 0), ("async", 1)])
def test_a_crash_keeps_the_enhanced_journal_and_forces_a_full_copy_otherwise(
        s: Sites, tmp_path: Path, mode: str, full_copies: int) -> None:
    s.a.create_dr_group("dr", ["vd1"], "EVA-B", mode=mode)
    s.a.write("vd1", 0, blk(1))
    s.pump()
    s.wire.set(up=False)
    s.a.write("vd1", BLOCK, b"after")
    s.a.write("vd1", 2 * BLOCK, b"the link went")
    # the process dies here: no close(), the last state.json is not a clean one
    a2 = EvaArray(tmp_path / "a", clock=s.clock)
    info = a2.dr_info("dr")
    assert info["full_copies"] == full_copies
    if mode == "enhanced":
        assert info["log_writes"] >= 2 and info["pending_blocks"] == 0
    a2.connect_peer("EVA-B", LocalLink(s.b, s.wire))
    s.wire.set(up=True)
    for _ in range(3):
        a2.ca_pump()
    assert a2.dr_info("dr")["state"] == "normal" and a2.dr_info("dr")["log_writes"] == 0
    assert s.b.read("vd1", 0, BLOCK) == blk(1)
    assert s.b.read("vd1", BLOCK, 5) == b"after"
    assert s.b.read("vd1", 2 * BLOCK, 13) == b"the link went"

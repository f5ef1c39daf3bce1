"""The remote-replication part of the array conformance suite (DR groups between two arrays).

Run over the real SMI-S driver twice: two simulated EVA server processes linked over
HTTPS (certificates verified), and two in-process arrays through faked connections. Each
array replicates in the background (its pump), as a real one does, so the tests wait
for states with a deadline instead of driving the link by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import UserError
from drivers.remote import DrMode, DrRole, RemoteReplication
from drivers.smis import SmisArray
from simulators.eva import EvaArray, Refusal
from simulators.eva.cim import faked_connection
from simulators.eva.jobs import ShiftedClock
from simulators.eva.link import LocalLink, Wire
from simulators.eva.process import EvaServer
from simulators.eva.pump import Pump
from simulators.sites import link_arrays

MiB = 1 << 20
POOL = "DG1"
HOST = "esx"


@dataclass
class Pair:
    a: SmisArray
    b: SmisArray
    port_a: Any  # host data path at site A
    port_b: Any
    link: Callable[..., None]  # link(up=..., bandwidth=...)
    advance: Callable[[float], None]  # move both arrays' clocks


@pytest.fixture(scope="module", params=["https", "faked"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Pair]:
    root: Path = tmp_path_factory.mktemp(f"ca-{request.param}")
    if request.param == "https":
        with EvaServer.start(root / "a", pools={POOL: 128 * MiB}, hosts={HOST: ["5000A1"]},
                             name="EVA-A") as ea, \
                EvaServer.start(root / "b", pools={POOL: 128 * MiB}, hosts={HOST: ["5000B1"]},
                                name="EVA-B") as eb:
            link_arrays(ea, eb)

            def link(**kw: Any) -> None:
                for e in (ea, eb):
                    e.control(op="link", **kw)

            def advance(s: float) -> None:
                for e in (ea, eb):
                    e.control(op="advance_clock", seconds=s)

            yield Pair(SmisArray(ea.connection(timeout=10), poll_s=0.02),
                       SmisArray(eb.connection(timeout=10), poll_s=0.02),
                       ea.host_port(HOST), eb.host_port(HOST), link, advance)
        return
    wire = Wire()
    arrays = []
    for name, wwn in (("EVA-A", "5000A1"), ("EVA-B", "5000B1")):
        arr = EvaArray(root / name, clock=ShiftedClock(), name=name)
        arr.add_pool(POOL, 128 * MiB)
        arr.add_host(HOST, [wwn])
        arrays.append(arr)
    ra, rb = arrays
    ra.connect_peer("EVA-B", LocalLink(rb, wire))
    rb.connect_peer("EVA-A", LocalLink(ra, wire))
    pumps = [Pump(x).start() for x in arrays]

    def advance_local(s: float) -> None:
        for x in arrays:
            x.clock.advance(s)  # type: ignore[attr-defined]

    yield Pair(SmisArray(faked_connection(ra), poll_s=0.02),
               SmisArray(faked_connection(rb), poll_s=0.02), ra.host_port(HOST),
               rb.host_port(HOST), lambda **kw: wire.set(**kw), advance_local)
    for p in pumps:
        p.stop()


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def p(pair: Pair) -> Iterator[Pair]:
    pair.link(up=True, bandwidth=None)
    yield pair
    pair.link(up=True, bandwidth=None)
    for d in (pair.a, pair.b):
        for g in d.list_dr_groups():
            if g.role == DrRole.SOURCE:
                if g.suspended:
                    d.resume_dr_group(g.name)
                d.delete_dr_group(g.name)
    for d in (pair.a, pair.b):
        for pr in d.list_presentations():
            d.unpresent(pr.vdisk, pr.host)
        for v in d.list_vdisks():
            d.delete_vdisk(v.name)


def make_group(p: Pair, mode: DrMode = DrMode.SYNC) -> tuple[int, int]:
    """vd1, vd2 at A presented to the host (LUNs), in DR group 'dr' replicated to B."""
    for v in ("vd1", "vd2"):
        p.a.create_vdisk(v, 4 * MiB, POOL)
    luns = p.a.present("vd1", HOST).lun, p.a.present("vd2", HOST).lun
    assert p.a.list_remote_arrays() == ["EVA-B"]
    g = p.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B", mode)
    assert (g.role, g.remote_array, [m.local for m in g.members]) == (
        DrRole.SOURCE, "EVA-B", ["vd1", "vd2"])
    wait_for("initial copy", lambda: p.a.get_dr_group("dr").in_sync)
    return luns


def test_driver_is_remote_replication(p: Pair) -> None:
    assert isinstance(p.a, RemoteReplication)


def test_sync_group_mirrors_and_destination_is_read_only(p: Pair) -> None:
    la, _ = make_group(p)
    p.port_a.write(la, 0, b"site-A" * 100)
    b = p.b.get_dr_group("dr")
    assert (b.role, b.home, b.mode) == (DrRole.DESTINATION, "EVA-A", DrMode.SYNC)
    assert (b.copy_state, b.sync_state) == (4, 6)
    lb = p.b.present("vd1", HOST).lun
    assert p.port_b.read(lb, 0, 600) == b"site-A" * 100
    with pytest.raises((OSError, Refusal), match="read-only to hosts"):
        p.port_b.write(lb, 0, b"no")
    # idempotent: creating the same group again returns it
    assert p.a.create_dr_group("dr", ["vd1", "vd2"], "EVA-B").name == "dr"


def test_refusals_keep_the_arrays_words_and_ops_are_idempotent(p: Pair) -> None:
    make_group(p)
    with pytest.raises(UserError, match="failover is issued on the destination"):
        p.a.failover_dr_group("dr")
    assert p.a.suspend_dr_group("dr").suspended
    assert p.a.suspend_dr_group("dr").suspended  # already: nothing sent
    wait_for("destination sees the suspend", lambda: p.b.get_dr_group("dr").suspended)
    with pytest.raises(UserError, match="suspended: resume it"):
        p.b.failover_dr_group("dr")
    assert not p.a.resume_dr_group("dr").suspended
    assert not p.a.resume_dr_group("dr").suspended


def test_async_link_down_logs_then_merges(p: Pair) -> None:
    la, lb = make_group(p, DrMode.ASYNC)
    p.link(up=False)
    for i in range(3):
        p.port_a.write(la, i * MiB, bytes([i + 1]) * MiB)
    wait_for("logging", lambda: p.a.get_dr_group("dr").state == "logging")
    g = p.a.get_dr_group("dr")
    assert g.log_writes == 3 and g.log_bytes == 3 * MiB and (g.copy_state, g.sync_state) == (
        16, 12)
    p.link(up=True)
    wait_for("merge", lambda: p.a.get_dr_group("dr").in_sync)
    b_lun = p.b.present("vd1", HOST).lun
    assert p.port_b.read(b_lun, 2 * MiB, 4) == bytes([3]) * 4


def test_planned_failover_and_failback_after_the_guard(p: Pair) -> None:
    la, _ = make_group(p)
    p.port_a.write(la, 0, b"before")
    p.a.unpresent("vd1", HOST)
    p.a.unpresent("vd2", HOST)
    g = p.b.failover_dr_group("dr")
    assert g.role == DrRole.SOURCE and p.a.get_dr_group("dr").role == DrRole.DESTINATION
    assert p.b.failover_dr_group("dr").generation == g.generation  # done already: no-op
    lb = p.b.present("vd1", HOST).lun
    assert p.port_b.read(lb, 0, 6) == b"before"
    p.port_b.write(lb, 0, b"at-B")
    wait_for("reverse replication", lambda: p.b.get_dr_group("dr").in_sync)
    with pytest.raises(UserError, match=r"failback is allowed 15 minutes after a failover"):
        p.a.failback_dr_group("dr")
    p.advance(901)
    p.b.unpresent("vd1", HOST)
    g = p.a.failback_dr_group("dr")
    assert g.role == DrRole.SOURCE and g.local_array == "EVA-A"
    assert p.a.failback_dr_group("dr").generation == g.generation  # at home: no-op
    la = p.a.present("vd1", HOST).lun
    assert p.port_a.read(la, 0, 4) == b"at-B"


def test_mode_and_failsafe_settings(p: Pair) -> None:
    make_group(p)
    g = p.a.set_dr_mode("dr", DrMode.ENHANCED, failsafe=True)
    assert (g.mode, g.failsafe) == (DrMode.ENHANCED, True)
    assert p.a.set_dr_mode("dr", DrMode.ENHANCED).mode == DrMode.ENHANCED  # no change: no call
    wait_for("destination learns the mode", lambda: p.b.get_dr_group("dr").mode ==
             DrMode.ENHANCED)

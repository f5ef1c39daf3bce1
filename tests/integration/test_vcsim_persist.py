"""The simulator's persistent inventory: killed (SIGKILL) and started again on the same
port, it has the same VMs under the same ids, their disks, snapshots and delta disks,
change tracking, power state and datastore, as a restarted vCenter has."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from pyVim.task import WaitForTask

from simulators.vcsim import Vcsim

MiB = 1 << 20


@pytest.fixture
def sim(tmp_path) -> Iterator[Vcsim]:  # noqa: ANN001 - pytest's tmp_path
    with Vcsim(work_dir=tmp_path / "vc", persist=True, vms_per_pool=1) as s:
        yield s


def _state(s: Vcsim, change_id: str) -> dict[str, object]:
    vm = s.vm("p1")
    return {"ref": vm._moId, "snapshots": s.snapshot_names("p1"),
            "snapshot ref": s.snapshot("p1", "s2")._moId,
            "change ids": [s.change_id("p1", i) for i in range(2)],
            "frozen change id": s.change_id("p1", 0, "s1"),
            "power": vm.runtime.powerState, "port": s.port, "datastores": dict(s.datastores),
            "changed areas": s.changed_areas("p1", "s2", 0, change_id)[0]}


def test_restart_keeps_the_inventory(sim: Vcsim) -> None:
    sim.create_vm("p1", [4 * MiB, 2 * MiB])
    sim.seed_disk("p1", 0, b"A" * MiB)
    sim.enable_cbt("p1")
    sim.create_snapshot("p1", "s1")
    sim.guest_write("p1", 0, 2 * MiB, b"B" * 70000)
    sim.create_snapshot("p1", "s2")
    WaitForTask(sim.vm("p1").PowerOnVM_Task())
    base = sim.change_id("p1", 0, "s1")
    before = _state(sim, base)
    assert before["changed areas"] == [(2 * MiB, 128 << 10)]

    sim.restart()

    assert _state(sim, base) == before
    assert sim.state()["generation"] == 0
    new = sim.create_vm("p2", [MiB])  # a new id, not one of the restored ones
    assert new not in (before["ref"], before["snapshot ref"])
    WaitForTask(sim.vm("p1").PowerOffVM_Task())
    sim.remove_snapshot("p1", "s2")  # the delta disks are still known: consolidated
    data = sim.read_current_disk("p1", 0).read_bytes()
    assert data[:MiB] == b"A" * MiB and data[2 * MiB:2 * MiB + 70000] == b"B" * 70000
    assert sim.snapshot_names("p1") == ["s1"]


def test_crash_fault_restarts_the_process(sim: Vcsim) -> None:
    """Fault kind "crash": the process replaces itself with a fresh start (same port); a
    VM made before is there, the call that crashed it never ran."""
    ref = sim.create_vm("p3", [MiB])
    sim.set_fault(method="PowerOnVM_Task", kind="crash", ms=200, count=1)
    with pytest.raises((OSError, http.client.HTTPException)):  # the answer never came
        sim.vm("p3").PowerOnVM_Task()
    sim.wait_ready()
    assert sim.state()["generation"] == 1
    assert sim.faults() == []  # run-time rules die with the process
    assert sim.vm("p3")._moId == ref
    assert sim.vm("p3").runtime.powerState == "poweredOff"

"""The EVA model alone: copy-on-write, space, state machine, jobs, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.eva import EvaArray, ManualClock, Missing, Refusal
from simulators.eva.disks import BLOCK
from simulators.eva.jobs import JOB_COMPLETED, JOB_EXCEPTION, JOB_RUNNING

MiB = 1 << 20


@pytest.fixture
def array(tmp_path: Path) -> EvaArray:
    a = EvaArray(tmp_path, clock=ManualClock())
    a.add_pool("DG1", 64 * MiB)
    a.add_host("h", ["5000A"])
    a.create_vdisk("v", 8 * MiB, "DG1")
    return a


def test_vsnap_is_space_efficient_and_copy_on_write(array: EvaArray) -> None:
    array.write("v", 0, b"old" * 100)
    free = array.pool_free("DG1")
    array.create_replica_set("s", ["v"], "vsnap")
    assert array.pool_free("DG1") == free  # nothing reserved, nothing copied
    assert array.vdisks["s-v"].disk.allocated_bytes() == 0
    array.write("v", 0, b"new")
    assert array.read("s-v", 0, 3) == b"old"
    assert array.pool_free("DG1") == free - BLOCK  # one block saved
    assert array.vdisks["s-v"].disk.own == {0}


def test_snapshot_reserves_its_size(array: EvaArray) -> None:
    free = array.pool_free("DG1")
    array.create_replica_set("s", ["v"], "snapshot")
    assert array.pool_free("DG1") == free - 8 * MiB


def test_snapclone_becomes_independent_and_keeps_holes(array: EvaArray) -> None:
    array.write("v", 3 * MiB, b"x" * 10)
    array.create_replica_set("c", ["v"], "snapclone")
    disk = array.vdisks["c-v"].disk
    assert disk.backing is None and disk.allocated_bytes() <= BLOCK
    array.write("v", 3 * MiB, b"y")
    assert array.read("c-v", 3 * MiB, 2) == b"xx"


def test_mirrorclone_follows_until_fractured(array: EvaArray) -> None:
    array.create_replica_set("m", ["v"], "mirrorclone")
    array.write("v", 0, b"1")
    assert array.read("m-v", 0, 1) == b"1"
    array.modify("m", "fracture")
    array.write("v", 0, b"2")
    assert array.read("m-v", 0, 1) == b"1"
    array.modify("m", "resync")
    assert array.read("m-v", 0, 1) == b"2"


def test_restore_copies_only_the_delta(array: EvaArray) -> None:
    array.write("v", 0, b"a" * BLOCK)
    array.create_replica_set("c", ["v"], "snapclone")
    array.write("v", 5 * BLOCK, b"b")
    pair = array.pairs_of("c")[0]
    assert pair.changed == {5}
    array.modify("c", "restore")
    assert array.read("v", 5 * BLOCK, 1) == b"\0" and array.read("v", 0, 1) == b"a"
    assert pair.changed == set()


def test_refusals_carry_codes_and_words(array: EvaArray) -> None:
    with pytest.raises(Refusal, match="already exists") as e:
        array.create_vdisk("v", MiB, "DG1")
    assert e.value.rc == 5
    with pytest.raises(Refusal, match="insufficient free space") as e:
        array.create_vdisk("big", 1 << 30, "DG1")
    assert e.value.rc == 4
    array.present("v", "h")
    with pytest.raises(Refusal, match="presented") as e:
        array.delete_vdisk("v")
    assert e.value.rc == 6
    array.unpresent("v", "h")
    array.create_replica_set("s", ["v"], "vsnap")
    with pytest.raises(Refusal, match="has replicas"):
        array.delete_vdisk("v")
    with pytest.raises(Refusal, match="illegal state change"):
        array.modify("s", "detach")
    with pytest.raises(Refusal, match="cannot replicate a replica"):
        array.create_replica_set("ss", ["s-v"], "vsnap")
    with pytest.raises(Missing):
        array.modify("nope", "restore")


def test_vsnap_breaks_when_pool_is_full(array: EvaArray) -> None:
    array.create_replica_set("s", ["v"], "vsnap")
    array.fill_pool("DG1")
    array.write("v", 0, b"z")  # the host write succeeds; the vsnap cannot save its block
    assert array.pair_status(array.pairs_of("s")[0]) == "broken"
    with pytest.raises(Refusal, match="broken"):
        array.read("s-v", 0, 1)


def test_jobs_run_on_the_injected_clock(array: EvaArray) -> None:
    clock = array.clock
    assert isinstance(clock, ManualClock)
    array.job_seconds = 10
    ok = array.start_job("x", [("vdisk", "v")])
    bad = array.start_job("y", [], (32769, "boom"))
    assert ok.state(clock.now()) == JOB_RUNNING
    clock.advance(5)
    assert ok.percent(clock.now()) == 50
    clock.advance(5)
    assert (ok.state(clock.now()), bad.state(clock.now())) == (JOB_COMPLETED, JOB_EXCEPTION)


def test_state_survives_the_process(array: EvaArray, tmp_path: Path) -> None:
    array.write("v", 0, b"keep")
    array.create_replica_set("s", ["v"], "vsnap")
    array.write("v", 0, b"gone")
    array.present("s-v", "h", lun=4)
    array.faults.fail_method("CreateGroup", rc=6)
    array.close()
    b = EvaArray(tmp_path)
    assert b.read("s-v", 0, 4) == b"keep" and b.read("v", 0, 4) == b"gone"
    assert b.host_port("h").read(4, 0, 4) == b"keep"
    assert b.faults.take("CreateGroup") is not None
    b.write("v", 0, b"more")  # copy-on-write still wired after reload
    assert b.read("s-v", 0, 4) == b"keep"

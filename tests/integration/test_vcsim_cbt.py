"""Changed Block Tracking in dpflow-vcsim, through pyVmomi directly.

What the incremental image backup relies on: changeIds on the disks of the VM and of
each snapshot, QueryChangedDiskAreas answering allocated areas ('*') or exactly the
blocks changed since a changeId, paged like vCenter, the faults vCenter gives for an
invalid changeId or tracking turned off, injected faults, and deliberately corrupted
answers.
"""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator

import pytest
from pyVmomi import vim, vmodl

from simulators.vcsim import Vcsim

KiB = 1 << 10
MiB = 1 << 20
BLOCK = 64 * KiB
CHANGE_ID = re.compile(r"^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/\d+$")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with Vcsim(cert_dir=tmp_path_factory.mktemp("certs")) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        s: Vcsim = request.getfixturevalue("sim")
        s.clear_faults()
        s.corrupt_cbt(None)
        s.set_cbt_page_limit(64)


def _query(sim: Vcsim, vm: str, snap: str, index: int, change_id: str, offset: int = 0):
    disk_key = [
        d for d in sim.snapshot(vm, snap).config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
    ][index].key
    return sim.vm(vm).QueryChangedDiskAreas(
        snapshot=sim.snapshot(vm, snap), deviceKey=disk_key, startOffset=offset,
        changeId=change_id,
    )


def _blocks(offset: int, length: int) -> tuple[int, int]:
    """The block-aligned area covering [offset, offset+length)."""
    start = offset // BLOCK * BLOCK
    end = -(-(offset + length) // BLOCK) * BLOCK
    return start, end - start


def test_change_ids_look_like_vcenters_and_advance_per_snapshot(sim: Vcsim) -> None:
    sim.create_vm("cbt-ids", [4 * MiB, 2 * MiB])
    assert sim.change_id("cbt-ids", 0) == ""  # tracking off: no changeId
    sim.enable_cbt("cbt-ids")
    assert sim.vm("cbt-ids").config.changeTrackingEnabled is True
    first = sim.change_id("cbt-ids", 0)
    assert CHANGE_ID.match(first) and first.endswith("/0")
    epoch = first.rsplit("/", 1)[0]
    other_disk = sim.change_id("cbt-ids", 1)
    assert CHANGE_ID.match(other_disk) and other_disk.rsplit("/", 1)[0] != epoch

    sim.create_snapshot("cbt-ids", "s1")
    assert sim.change_id("cbt-ids", 0, "s1") == f"{epoch}/1"
    assert sim.change_id("cbt-ids", 0) == f"{epoch}/1"  # the VM shows the latest
    sim.create_snapshot("cbt-ids", "s2")
    assert sim.change_id("cbt-ids", 0, "s1") == f"{epoch}/1"  # frozen with s1
    assert sim.change_id("cbt-ids", 0, "s2") == f"{epoch}/2"
    assert sim.change_id("cbt-ids", 1, "s2").endswith("/2")
    # the snapshot's config names the frozen parent, the VM's the delta
    assert sim.snapshot_disk_path("cbt-ids", "s2", 0).name == "cbt-ids-000001-flat.vmdk"
    assert sim.current_disk_path("cbt-ids", 0).name == "cbt-ids-000002-flat.vmdk"


def test_star_answers_allocated_areas_only(sim: Vcsim) -> None:
    sim.create_vm("cbt-star", [16 * MiB])
    writes = [(0, 100), (5 * MiB, MiB), (9 * MiB + 1000, 70_000)]
    for off, n in writes:
        sim.guest_write("cbt-star", 0, off, os.urandom(n))
    sim.enable_cbt("cbt-star")
    sim.create_snapshot("cbt-star", "full")
    areas, calls = sim.changed_areas("cbt-star", "full", 0, "*")
    assert calls == 1
    assert areas == [_blocks(off, n) for off, n in writes]
    info = _query(sim, "cbt-star", "full", 0, "*")
    assert (info.startOffset, info.length) == (0, 16 * MiB)  # one answer covers all


def test_changes_since_snapshot_are_exactly_the_written_blocks(sim: Vcsim) -> None:
    sim.create_vm("cbt-incr", [8 * MiB, 4 * MiB])
    sim.seed_disk("cbt-incr", 0, os.urandom(3 * MiB))
    sim.enable_cbt("cbt-incr")
    sim.create_snapshot("cbt-incr", "s1")
    s1 = sim.change_id("cbt-incr", 0, "s1")
    writes = [
        (3 * BLOCK + 5, 1),                 # one byte: its block
        (10 * BLOCK, 2 * BLOCK),            # two adjacent blocks: one area
        (12 * BLOCK, BLOCK),                # adjacent to the previous: merged
        (20 * BLOCK - 10, 20),              # straddles a boundary: two blocks
        (6 * MiB, 1000),                    # into a hole
        (8 * MiB - BLOCK, BLOCK),           # the last block
    ]
    for off, n in writes:
        sim.guest_write("cbt-incr", 0, off, os.urandom(n))
    sim.create_snapshot("cbt-incr", "s2")
    areas, _ = sim.changed_areas("cbt-incr", "s2", 0, s1)
    assert areas == [
        (3 * BLOCK, BLOCK), (10 * BLOCK, 3 * BLOCK), (19 * BLOCK, 2 * BLOCK),
        (6 * MiB, BLOCK), (8 * MiB - BLOCK, BLOCK),
    ]
    # the other disk did not change; against the enable-time state (…/0) too
    assert sim.changed_areas("cbt-incr", "s2", 1, sim.change_id("cbt-incr", 1, "s1"))[0] == []
    assert sim.changed_areas("cbt-incr", "s2", 1, sim.change_id("cbt-incr", 1, "s1")
                             .rsplit("/", 1)[0] + "/0")[0] == []
    # nothing changed between a snapshot and itself
    assert sim.changed_areas("cbt-incr", "s2", 0, sim.change_id("cbt-incr", 0, "s2"))[0] == []


def test_change_id_stays_valid_after_its_snapshot_is_removed(sim: Vcsim) -> None:
    """The backup's cycle: snapshot, read, keep the changeId, remove the snapshot;
    next time snapshot again and ask what changed since the kept changeId."""
    sim.create_vm("cbt-cycle", [4 * MiB])
    sim.seed_disk("cbt-cycle", 0, os.urandom(2 * MiB))
    sim.enable_cbt("cbt-cycle")
    sim.create_snapshot("cbt-cycle", "night1")
    kept = sim.change_id("cbt-cycle", 0, "night1")
    sim.remove_snapshot("cbt-cycle", "night1")
    sim.guest_write("cbt-cycle", 0, MiB + 7, b"day two")
    sim.create_snapshot("cbt-cycle", "night2")
    assert sim.changed_areas("cbt-cycle", "night2", 0, kept)[0] == [_blocks(MiB + 7, 7)]
    sim.remove_snapshot("cbt-cycle", "night2")


def test_paging_covers_the_disk_in_several_answers(sim: Vcsim) -> None:
    sim.create_vm("cbt-page", [32 * MiB])
    sim.enable_cbt("cbt-page")
    sim.create_snapshot("cbt-page", "s1")
    s1 = sim.change_id("cbt-page", 0, "s1")
    offsets = [i * 2 * MiB + 3 * BLOCK for i in range(11)]
    for off in offsets:
        sim.guest_write("cbt-page", 0, off, b"z" * BLOCK)
    sim.create_snapshot("cbt-page", "s2")
    full, calls = sim.changed_areas("cbt-page", "s2", 0, s1)
    assert calls == 1 and full == [(off, BLOCK) for off in offsets]

    sim.set_cbt_page_limit(3)
    assert sim.cbt_state()["page_limit"] == 3
    answers, offset = [], 0
    while offset < 32 * MiB:
        info = _query(sim, "cbt-page", "s2", 0, s1, offset)
        assert info.startOffset == offset and len(info.changedArea) <= 3
        answers.append(info)
        offset = info.startOffset + info.length
    assert offset == 32 * MiB and len(answers) == 4
    # a full page covers up to the end of its last area; the last page to the disk's end
    assert answers[0].length == offsets[2] + BLOCK
    assert answers[-1].startOffset + answers[-1].length == 32 * MiB
    paged = [(a.start, a.length) for info in answers for a in info.changedArea]
    assert paged == full
    assert sim.changed_areas("cbt-page", "s2", 0, s1) == (full, 4)
    # a start inside an area clips it
    info = _query(sim, "cbt-page", "s2", 0, s1, offsets[1] + 100)
    assert (info.changedArea[0].start, info.changedArea[0].length) == (
        offsets[1] + 100, BLOCK - 100)


def test_page_limit_at_start(tmp_path) -> None:
    with Vcsim(cert_dir=tmp_path / "certs", vms_per_pool=1, cbt_page_limit=1) as s:
        s.create_vm("p", [MiB])
        for off in (0, 2 * BLOCK, 4 * BLOCK):
            s.guest_write("p", 0, off, b"x")
        s.enable_cbt("p")
        s.create_snapshot("p", "s")
        assert s.changed_areas("p", "s", 0, "*") == (
            [(0, BLOCK), (2 * BLOCK, BLOCK), (4 * BLOCK, BLOCK)], 3)


def test_invalid_change_id_is_invalid_argument(sim: Vcsim) -> None:
    sim.create_vm("cbt-bad", [MiB, MiB])
    sim.enable_cbt("cbt-bad")
    sim.create_snapshot("cbt-bad", "s")
    good = sim.change_id("cbt-bad", 0, "s")
    epoch, _, seq = good.rpartition("/")
    for bad in ["", "garbage", f"{epoch}/{int(seq) + 5}", sim.change_id("cbt-bad", 1, "s"),
                "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"]:
        with pytest.raises(vmodl.fault.InvalidArgument) as err:
            _query(sim, "cbt-bad", "s", 0, bad)
        assert err.value.invalidProperty == "changeId"
        assert err.value.msg == "A specified parameter was not correct: changeId"
    vm, snap = sim.vm("cbt-bad"), sim.snapshot("cbt-bad", "s")
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=9999, startOffset=0, changeId="*")
    assert err.value.invalidProperty == "deviceKey"
    key = sim.disk_key("cbt-bad", 0)
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=MiB, changeId="*")
    assert err.value.invalidProperty == "startOffset"


def test_tracking_off_is_file_fault_and_disable_enable_resets(sim: Vcsim) -> None:
    sim.create_vm("cbt-reset", [2 * MiB])
    sim.create_snapshot("cbt-reset", "before")  # taken while tracking was off
    with pytest.raises(vim.fault.FileFault) as err:
        _query(sim, "cbt-reset", "before", 0, "*")
    assert err.value.msg.startswith("Error caused by file [LocalDS_0] cbt-reset/")
    sim.enable_cbt("cbt-reset")
    with pytest.raises(vim.fault.FileFault):  # that snapshot has no changeId
        _query(sim, "cbt-reset", "before", 0, "*")

    sim.create_snapshot("cbt-reset", "s1")
    old = sim.change_id("cbt-reset", 0, "s1")
    sim.disable_cbt("cbt-reset")
    assert sim.change_id("cbt-reset", 0) == ""
    with pytest.raises(vim.fault.FileFault) as err:
        _query(sim, "cbt-reset", "s1", 0, "*")
    assert err.value.file.startswith("[LocalDS_0] cbt-reset/")

    sim.enable_cbt("cbt-reset")
    new = sim.change_id("cbt-reset", 0)
    assert new.endswith("/0") and new.rsplit("/", 1)[0] != old.rsplit("/", 1)[0]
    sim.create_snapshot("cbt-reset", "s2")
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        _query(sim, "cbt-reset", "s2", 0, old)
    assert err.value.invalidProperty == "changeId"
    assert _query(sim, "cbt-reset", "s2", 0, new).changedArea == []
    assert _query(sim, "cbt-reset", "s2", 0, "*").length == 2 * MiB


def test_disk_resize_invalidates_earlier_change_ids(sim: Vcsim) -> None:
    sim.create_vm("cbt-grow", [2 * MiB])
    sim.guest_write("cbt-grow", 0, 0, b"boot")
    sim.enable_cbt("cbt-grow")
    sim.create_snapshot("cbt-grow", "s1")
    before = sim.change_id("cbt-grow", 0, "s1")
    sim.remove_snapshot("cbt-grow", "s1")
    sim.resize_disk("cbt-grow", 0, 4 * MiB)
    assert sim.current_disk_path("cbt-grow", 0).stat().st_size == 4 * MiB
    sim.create_snapshot("cbt-grow", "s2")
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        _query(sim, "cbt-grow", "s2", 0, before)
    assert err.value.invalidProperty == "changeId"
    assert sim.changed_areas("cbt-grow", "s2", 0, "*")[0] == [(0, BLOCK)]
    # changeIds issued after the resize work
    after = sim.change_id("cbt-grow", 0, "s2")
    sim.remove_snapshot("cbt-grow", "s2")
    sim.guest_write("cbt-grow", 0, 3 * MiB, b"grown")
    sim.create_snapshot("cbt-grow", "s3")
    assert sim.changed_areas("cbt-grow", "s3", 0, after)[0] == [(3 * MiB, BLOCK)]


def test_injected_faults(sim: Vcsim) -> None:
    sim.create_vm("cbt-fault", [MiB])
    sim.enable_cbt("cbt-fault")
    sim.create_snapshot("cbt-fault", "s")
    sim.set_fault(method="QueryChangedDiskAreas", kind="soap", fault="FileFault", count=1)
    with pytest.raises(vim.fault.FileFault):
        _query(sim, "cbt-fault", "s", 0, "*")
    sim.set_fault(method="QueryChangedDiskAreas", kind="task", fault="NotFound",
                  message="disk went away", count=1)
    with pytest.raises(vim.fault.NotFound) as err:
        _query(sim, "cbt-fault", "s", 0, "*")
    assert err.value.msg == "disk went away"
    sim.set_fault(method="QueryChangedDiskAreas", kind="http", status=503, count=1)
    with pytest.raises(http.client.HTTPException):
        _query(sim, "cbt-fault", "s", 0, "*")
    sim.set_fault(method="QueryChangedDiskAreas", kind="drop", count=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _query(sim, "cbt-fault", "s", 0, "*")
    sim.set_fault(method="QueryChangedDiskAreas", kind="delay", ms=200, count=1)
    t = time.monotonic()
    assert _query(sim, "cbt-fault", "s", 0, "*").length == MiB
    assert time.monotonic() - t >= 0.2
    assert [r["hits"] for r in sim.faults()] == [1, 1, 1, 1, 1]
    # an armed "task" fault does not leak into the VM's next task
    sim.create_snapshot("cbt-fault", "after")


def test_corruption_silently_drops_an_area(sim: Vcsim) -> None:
    sim.create_vm("cbt-corrupt", [8 * MiB])
    sim.enable_cbt("cbt-corrupt")
    sim.create_snapshot("cbt-corrupt", "s1")
    s1 = sim.change_id("cbt-corrupt", 0, "s1")
    offsets = [i * MiB for i in range(6)]
    for off in offsets:
        sim.guest_write("cbt-corrupt", 0, off, b"c")
    sim.create_snapshot("cbt-corrupt", "s2")
    truth = [(off, BLOCK) for off in offsets]
    assert sim.changed_areas("cbt-corrupt", "s2", 0, s1)[0] == truth

    sim.corrupt_cbt(drop_area=4)
    sim.set_cbt_page_limit(2)  # the dropped area is the same whatever the paging
    assert sim.cbt_state()["drop_area"] == 4
    areas, calls = sim.changed_areas("cbt-corrupt", "s2", 0, s1)
    assert areas == truth[:4] + truth[5:] and calls == 3
    assert sim.cbt_state()["dropped"] >= calls
    sim.corrupt_cbt(None)
    assert sim.changed_areas("cbt-corrupt", "s2", 0, s1)[0] == truth


def test_clone_and_revert_keep_tracking_consistent(sim: Vcsim) -> None:
    from pyVim.task import WaitForTask

    sim.create_vm("cbt-src", [MiB])
    sim.enable_cbt("cbt-src")
    vm = sim.vm("cbt-src")
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vm.resourcePool))
    WaitForTask(vm.CloneVM_Task(folder=vm.parent, name="cbt-dst", spec=spec))
    # vcsim's clone does not carry changeTrackingEnabled: no stale changeId either
    assert not sim.vm("cbt-dst").config.changeTrackingEnabled
    assert sim.change_id("cbt-dst", 0) == ""

    sim.create_snapshot("cbt-src", "s1")
    sim.guest_write("cbt-src", 0, 0, b"x")
    sim.create_snapshot("cbt-src", "s2")
    WaitForTask(sim.snapshot("cbt-src", "s1").RevertToSnapshot_Task())
    sim.create_snapshot("cbt-src", "s3")  # same content as s1
    assert sim.change_id("cbt-src", 0, "s3").endswith("/3")
    s1, s2 = sim.change_id("cbt-src", 0, "s1"), sim.change_id("cbt-src", 0, "s2")
    assert sim.changed_areas("cbt-src", "s3", 0, s1)[0] == []
    assert sim.changed_areas("cbt-src", "s3", 0, s2)[0] == [(0, BLOCK)]


@pytest.mark.slow
def test_sparse_1gib_disk_tracking_is_fast(sim: Vcsim) -> None:
    sim.create_vm("cbt-big", [1 << 30])
    sim.guest_write("cbt-big", 0, 700 * MiB, os.urandom(8 * MiB))
    t = time.monotonic()
    sim.enable_cbt("cbt-big")
    sim.create_snapshot("cbt-big", "s1")
    s1 = sim.change_id("cbt-big", 0, "s1")
    sim.guest_write("cbt-big", 0, 100 * MiB, b"x")
    sim.create_snapshot("cbt-big", "s2")
    assert sim.changed_areas("cbt-big", "s2", 0, s1)[0] == [(100 * MiB, BLOCK)]
    assert sim.changed_areas("cbt-big", "s2", 0, "*")[0] == [
        (100 * MiB, BLOCK), (700 * MiB, 8 * MiB)]
    assert time.monotonic() - t < 5


def test_without_snapshot_the_live_disk_is_compared(sim: Vcsim) -> None:
    sim.create_vm("cbt-live", [2 * MiB])
    sim.enable_cbt("cbt-live")
    sim.create_snapshot("cbt-live", "s1")
    s1 = sim.change_id("cbt-live", 0, "s1")
    sim.remove_snapshot("cbt-live", "s1")
    sim.guest_write("cbt-live", 0, BLOCK, b"live")
    vm, key = sim.vm("cbt-live"), sim.disk_key("cbt-live", 0)
    info = vm.QueryChangedDiskAreas(deviceKey=key, startOffset=0, changeId=s1)
    assert [(a.start, a.length) for a in info.changedArea] == [(BLOCK, BLOCK)]
    info = vm.QueryChangedDiskAreas(deviceKey=key, startOffset=0, changeId="*")
    assert [(a.start, a.length) for a in info.changedArea] == [(BLOCK, BLOCK)]

"""VM image backup and restore: the real pyVmomi driver against vcsim over HTTPS.

Every restore is compared bit for bit with the bytes the guest had when the snapshot
was taken; every failure path is checked for leftovers (snapshots, versions, VMs).
"""

from __future__ import annotations

import contextvars
import os
import threading
import uuid
from pathlib import Path

import pytest

from dpflow.environment import environment
from dpflow.errors import DpflowError
from simulators.guest_disks import MiB, make_guest_disk

pytestmark = pytest.mark.usefixtures("prefect_server")


def new_vm(vcsim, tmp_path: Path, sizes: list[int]) -> tuple[str, list[bytes]]:
    """A VM with real guest bytes; returns its name and the bytes of each disk."""
    name = f"vm-{uuid.uuid4().hex[:10]}"  # unique even if this module is imported twice
    vcsim.create_vm(name, sizes)
    contents = []
    for i, size in enumerate(sizes):
        img = tmp_path / f"{name}-{i}.img"
        make_guest_disk(img, size, seed=i + len(name))
        vcsim.seed_disk(name, i, img)
        contents.append(img.read_bytes())
    return name, contents


def disk_bytes(vcsim, vm: str, index: int, size: int) -> bytes:
    with open(vcsim.current_disk_path(vm, index), "rb") as f:
        return f.read(size)


def versions(cfg: Path, vm: str) -> list:
    return environment(cfg).catalog().versions(vm)


@pytest.fixture(autouse=True)
def _no_faults(vcsim):
    vcsim.clear_faults()
    yield
    vcsim.clear_faults()
    vcsim.set_datastore_free(None)


def test_backup_and_restore_as_new_vm_bit_for_bit(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, contents = new_vm(vcsim, tmp_path, [24 * MiB, 8 * MiB + 4096])
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed" and r.quiesced is True and r.snapshot_removed
    assert vcsim.snapshot_count(vm) == 0
    assert [v.id for v in versions(dc_config, vm)] == [r.version_id]
    rr = restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    assert rr.created and rr.verified
    for i, data in enumerate(contents):
        assert disk_bytes(vcsim, f"{vm}-r", i, len(data)) == data


def test_guest_writes_during_backup_do_not_reach_the_version(vcsim, dc_config, tmp_path):
    """Point in time: the guest writes after the snapshot; the version has the old bytes."""
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, (data,) = new_vm(vcsim, tmp_path, [32 * MiB])
    # slow every range read a little so the guest surely writes while the disk is read
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="delay", ms=30, count=0)
    stop, wrote = threading.Event(), []

    def guest() -> None:
        while not stop.is_set():
            if vcsim.snapshot_count(vm) > 0:
                vcsim.guest_write(vm, 0, (len(wrote) * 3 * MiB) % (31 * MiB), b"\xab" * MiB)
                wrote.append(1)
            stop.wait(0.005)

    t = threading.Thread(target=guest)
    t.start()
    try:
        r = backup_vm_image(str(dc_config), vm)
    finally:
        stop.set()
        t.join()
    assert wrote, "the guest never wrote during the backup"
    assert disk_bytes(vcsim, vm, 0, len(data)) != data  # the live disk did change
    restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    assert disk_bytes(vcsim, f"{vm}-r", 0, len(data)) == data


def fault_hits(vcsim, method: str) -> int:
    return sum(f.get("hits", 0) for f in vcsim.faults() if f.get("method") == method)


def test_quiesce_fault_is_retried_then_quiesced(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    vcsim.set_fault(method="CreateSnapshot_Task", kind="task", fault="ApplicationQuiesceFault",
                    count=1)
    r = backup_vm_image(str(dc_config), vm)
    assert fault_hits(vcsim, "CreateSnapshot_Task") == 1  # the first attempt did fail
    assert r.status == "completed" and r.quiesced is True
    assert "crash-consistent" not in versions(dc_config, vm)[0].note


def test_quiesce_failing_falls_back_only_when_policy_allows(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    vcsim.set_fault(method="CreateSnapshot_Task", kind="task", fault="ApplicationQuiesceFault",
                    count=2)
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed" and r.quiesced is False
    assert "crash-consistent" in versions(dc_config, vm)[0].note

    strict = dc_config.read_text().replace("quiesce: prefer", "quiesce: require")
    dc_config.write_text(strict)
    vcsim.set_fault(method="CreateSnapshot_Task", kind="task", fault="ApplicationQuiesceFault",
                    count=0)
    with pytest.raises(DpflowError, match="cannot be quiesced"):
        backup_vm_image(str(dc_config), vm)
    assert vcsim.snapshot_count(vm) == 0
    assert len(versions(dc_config, vm)) == 1


@pytest.mark.parametrize("rule", [
    {"kind": "drop_after", "bytes": 300_000, "count": 3},
    {"kind": "http", "status": 503, "count": 4},
    {"kind": "drop", "count": 2},
])
def test_disk_read_faults_resume_and_version_is_exact(vcsim, dc_config, tmp_path, rule):
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, (data,) = new_vm(vcsim, tmp_path, [8 * MiB])
    vcsim.set_fault(path=r"-flat\.vmdk$", **rule)
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed"
    hits = [f for f in vcsim.faults() if f.get("kind") == rule["kind"]]
    assert hits and hits[0].get("hits", 0) >= 1, hits
    vcsim.clear_faults()
    restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    assert disk_bytes(vcsim, f"{vm}-r", 0, len(data)) == data


def test_session_ending_mid_copy_logs_in_again_and_version_is_exact(vcsim, dc_config,
                                                                     tmp_path):
    """vCenter ends the session after 8 MiB of disk reads (Bareos' 66-minute failure):
    the copy logs in again, goes on, and the version restores bit for bit."""
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, contents = new_vm(vcsim, tmp_path, [24 * MiB, 8 * MiB])
    hv = environment(dc_config).hypervisor()  # the driver the flow's tasks use
    hv.check()
    logins, before = hv.logins, vcsim.sessions()
    rule = vcsim.set_fault(path=r"-flat\.vmdk$", kind="expire", bytes=8 * MiB, count=1)
    r = backup_vm_image(str(dc_config), vm)
    after = vcsim.sessions()
    assert r.status == "completed" and r.snapshot_removed
    assert [f["hits"] for f in vcsim.faults() if f["id"] == rule["id"]] == [1]  # it fired
    assert after["refused_http"] > before["refused_http"]  # a read met the ended session
    assert hv.logins == logins + 1  # one re-login, shared by the read streams
    assert vcsim.snapshot_count(vm) == 0
    vcsim.clear_faults()
    restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    for i, data in enumerate(contents):
        assert disk_bytes(vcsim, f"{vm}-r", i, len(data)) == data


def test_vcenter_service_restart_mid_copy_and_version_is_exact(vcsim, dc_config, tmp_path):
    """vCenter's service restarts after 8 MiB of disk reads: 1 s without answers, every
    session gone. The copy waits it out, logs in again and the version restores exactly."""
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, contents = new_vm(vcsim, tmp_path, [24 * MiB])
    hv = environment(dc_config).hypervisor()
    hv.check()
    logins, before = hv.logins, vcsim.sessions()
    rule = vcsim.set_fault(path=r"-flat\.vmdk$", kind="restart", bytes=8 * MiB, ms=1000,
                           count=1)
    r = backup_vm_image(str(dc_config), vm)
    after = vcsim.sessions()
    assert r.status == "completed" and r.snapshot_removed
    assert [f["hits"] for f in vcsim.faults() if f["id"] == rule["id"]] == [1]
    assert after["restarts"] == before["restarts"] + 1
    assert hv.logins == logins + 1
    assert vcsim.snapshot_count(vm) == 0
    vcsim.clear_faults()
    restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    assert disk_bytes(vcsim, f"{vm}-r", 0, len(contents[0])) == contents[0]


def test_permanent_read_failure_leaves_nothing(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="http", status=503, count=0)
    with pytest.raises(DpflowError):
        backup_vm_image(str(dc_config), vm)
    assert vcsim.snapshot_count(vm) == 0
    assert versions(dc_config, vm) == []
    store = environment(dc_config).store()
    assert list(store.versions_dir.iterdir()) == []  # no manifest refers to any chunk
    from sqlalchemy import select

    from dpflow.catalog import ObjectRow, SessionRow

    cat = environment(dc_config).catalog()
    with cat.session() as db:
        rows = db.scalars(select(SessionRow).join(ObjectRow).where(ObjectRow.name == vm)).all()
        recorded = [(s.kind, s.status, s.message) for s in rows]
    assert [(k, st) for k, st, _ in recorded] == [("backup-image", "failed")]
    assert "503" in recorded[0][2] or "unavailable" in recorded[0][2].lower(), recorded


def test_remove_snapshot_fault_is_retried(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    vcsim.set_fault(method="RemoveSnapshot_Task", kind="task", fault="Timedout", count=2)
    r = backup_vm_image(str(dc_config), vm)
    assert fault_hits(vcsim, "RemoveSnapshot_Task") == 2  # two removals failed, the third held
    assert r.status == "completed" and r.snapshot_removed
    assert vcsim.snapshot_count(vm) == 0


def test_remove_snapshot_failing_for_good_is_loud(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    vcsim.set_fault(method="RemoveSnapshot_Task", kind="task", fault="Timedout", count=0)
    with pytest.raises(DpflowError, match="snapshot .* was left"):
        backup_vm_image(str(dc_config), vm)
    assert vcsim.snapshot_count(vm) == 1
    vcsim.clear_faults()
    # the next backup removes the leftover before taking its own
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed" and vcsim.snapshot_count(vm) == 0


def test_vm_skipped_when_datastore_lacks_room_for_delta(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [16 * MiB])
    vcsim.set_datastore_free(100 * 1024)
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "skipped" and "snapshot delta" in r.message
    assert vcsim.snapshot_count(vm) == 0 and versions(dc_config, vm) == []


def test_restore_in_place_over_powered_off_vm(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, (data,) = new_vm(vcsim, tmp_path, [8 * MiB])
    r = backup_vm_image(str(dc_config), vm)
    vcsim.guest_write(vm, 0, 0, os.urandom(2 * MiB))
    rr = restore_vm_image(str(dc_config), vm, r.version_id)
    assert not rr.created
    assert disk_bytes(vcsim, vm, 0, len(data)) == data


def test_same_vm_sessions_never_overlap(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [8 * MiB])
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="delay", ms=40, count=0)
    results = []
    # each thread runs in a copy of this context: it carries the test server's settings
    # (a bare thread would start Prefect's own ephemeral server)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(
        lambda: results.append(backup_vm_image(str(dc_config), vm)),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["completed", "completed"]
    cat = environment(dc_config).catalog()
    s = sorted((cat.get_session(r.session_id) for r in results), key=lambda x: x.started)
    assert s[0].ended <= s[1].started

"""Calls whose answer was lost, and the reaper: no orphan snapshot, no doubled VM.

Through the real flows against vcsim: CreateSnapshot and CreateVM slowed past the client's
call timeout (the simulator's delay fault) or past the task deadline (its hold fault), and
dpflow snapshots left by sessions that no longer run. A second, zero-delay rule on the
same method counts any further call, so each test shows the method reached vCenter once.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyVmomi import vim
from sqlalchemy import select

from dpflow.catalog import ObjectRow, SessionRow
from dpflow.environment import environment
from dpflow.locks import exclusive
from simulators.guest_disks import MiB, make_guest_disk

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def _no_faults(vcsim):
    vcsim.clear_faults()
    yield
    vcsim.clear_faults()


def tune(cfg: Path, **settings: float) -> str:
    """The data-centre file with vCenter settings changed (timeouts, hunt window)."""
    doc = yaml.safe_load(cfg.read_text())
    doc["vcenters"][0].update(settings)
    cfg.write_text(yaml.safe_dump(doc))
    return str(cfg)


def new_vm(vcsim, tmp_path: Path, size: int = 4 * MiB) -> tuple[str, bytes]:
    name = f"hunt-{uuid.uuid4().hex[:10]}"
    vcsim.create_vm(name, [size])
    img = tmp_path / f"{name}.img"
    make_guest_disk(img, size, seed=len(name))
    vcsim.seed_disk(name, 0, img)
    return name, img.read_bytes()


def vms_named(vcsim, name: str) -> int:
    content = vcsim.si().RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    try:
        return sum(vm.name == name for vm in view.view)
    finally:
        view.Destroy()


def hits(vcsim, *rules: dict[str, Any]) -> list[int]:
    by_id = {r["id"]: r["hits"] for r in vcsim.faults()}
    return [by_id[r["id"]] for r in rules]


def test_snapshot_whose_answer_was_lost_is_found_not_doubled(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    cfg = tune(dc_config, call_timeout_s=2.0, hunt_s=30.0)
    vm, _ = new_vm(vcsim, tmp_path)
    slow = vcsim.set_fault(method="CreateSnapshot_Task", kind="delay", ms=4000, count=1)
    more = vcsim.set_fault(method="CreateSnapshot_Task", kind="delay", ms=0, count=0)
    r = backup_vm_image(cfg, vm)
    assert r.status == "completed" and r.snapshot_removed
    assert hits(vcsim, slow, more) == [1, 0]  # timed out on the client, carried out once
    assert vcsim.snapshot_count(vm) == 0


def test_snapshot_task_past_its_deadline_is_waited_for_before_a_retry(vcsim, dc_config,
                                                                       tmp_path):
    from flows.vm_image import backup_vm_image

    cfg = tune(dc_config, task_timeout_s=0.5)
    vm, _ = new_vm(vcsim, tmp_path)
    held = vcsim.set_fault(method="CreateSnapshot_Task", kind="hold", ms=2000, count=1)
    more = vcsim.set_fault(method="CreateSnapshot_Task", kind="delay", ms=0, count=0)
    r = backup_vm_image(cfg, vm)
    assert r.status == "completed" and r.snapshot_removed
    assert hits(vcsim, held, more) == [1, 0]  # the retry adopted the slow task's snapshot
    assert vcsim.snapshot_count(vm) == 0


def test_restore_whose_create_vm_answer_was_lost_makes_one_vm(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image

    vm, data = new_vm(vcsim, tmp_path)
    r = backup_vm_image(str(dc_config), vm)
    cfg = tune(dc_config, call_timeout_s=2.0, hunt_s=30.0)
    slow = vcsim.set_fault(method="CreateVM_Task", kind="delay", ms=4000, count=1)
    more = vcsim.set_fault(method="CreateVM_Task", kind="delay", ms=0, count=0)
    rr = restore_vm_image(cfg, vm, r.version_id, as_name=f"{vm}-r")
    assert rr.created and rr.verified
    assert hits(vcsim, slow, more) == [1, 0]
    assert vms_named(vcsim, f"{vm}-r") == 1
    with open(vcsim.current_disk_path(f"{vm}-r", 0), "rb") as f:
        assert f.read(len(data)) == data


def test_reaper_removes_snapshots_no_running_session_owns_and_reports_each(
        vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    catalog = environment(dc_config).catalog()
    orphan_vm, _ = new_vm(vcsim, tmp_path, MiB)
    owned_vm, _ = new_vm(vcsim, tmp_path, MiB)
    ended = catalog.begin_session("backup-image", "vm", orphan_vm)
    catalog.end_session(ended, "failed", "killed")
    running = catalog.begin_session("backup-image", "vm", owned_vm)
    vcsim.create_snapshot(orphan_vm, f"dpflow-{ended}")  # a failed session's leftover
    vcsim.create_snapshot(orphan_vm, "dpflow-0123456789abcdef")  # no session at all
    vcsim.create_snapshot(owned_vm, f"dpflow-{running}")  # still in use
    vcsim.create_snapshot(owned_vm, "nightly by the admin")  # not dpflow's

    vm, _ = new_vm(vcsim, tmp_path)
    with exclusive("vm", owned_vm):  # the running session's owner is alive: it holds its lock
        r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed"
    assert vcsim.snapshot_count(orphan_vm) == 0
    assert vcsim.snapshot_names(owned_vm) == sorted([f"dpflow-{running}",
                                                     "nightly by the admin"])
    with catalog.session() as db:  # each removal is a catalog record of its own
        reports = [(row.status, row.message.split()[3]) for row in db.scalars(
            select(SessionRow).join(ObjectRow).where(SessionRow.kind == "reap-snapshot",
                                                     ObjectRow.name == orphan_vm))]
    assert sorted(reports) == sorted([("completed", f"dpflow-{ended}"),
                                      ("completed", "dpflow-0123456789abcdef")])
    catalog.end_session(running, "completed")
    vcsim.remove_snapshot(owned_vm, "nightly by the admin")  # the child first
    vcsim.remove_snapshot(owned_vm, f"dpflow-{running}")


def test_reaper_destroys_vms_of_restores_that_failed_and_reports_each(vcsim, dc_config,
                                                                      tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image
    from tasks.vsphere import restore_marker

    catalog = environment(dc_config).catalog()
    hv = environment(dc_config).hypervisor()
    vm, data = new_vm(vcsim, tmp_path, MiB)
    spec = hv.find_vm(vm)
    sessions = {}
    for state in ("failed", "completed"):
        sessions[state] = catalog.begin_session("restore-image", "vm", f"{vm}-{state}")
        catalog.end_session(sessions[state], state)
        hv.create_vm(spec, f"{vm}-{state}", marker=restore_marker(sessions[state]))
    r = backup_vm_image(str(dc_config), vm)
    rr = restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-r")
    assert rr.verified
    assert vms_named(vcsim, f"{vm}-failed") == 0  # a failed restore's VM: destroyed
    assert vms_named(vcsim, f"{vm}-completed") == 1  # a restored VM is the user's
    with catalog.session() as db:
        reports = [(row.status, row.message.split()[2]) for row in db.scalars(
            select(SessionRow).join(ObjectRow).where(SessionRow.kind == "reap-vm",
                                                     ObjectRow.name == f"{vm}-failed"))]
    assert reports == [("completed", f"{vm}-failed")]
    hv.destroy_vm(hv.find_vm(f"{vm}-completed"))

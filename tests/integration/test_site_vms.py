"""VMs on replicated storage brought up at the other site, over two arrays and two vCenters.

Each VM's files (its .vmx and disk bytes) are in a VMFS volume on an EVA vdisk at site A;
they reach site B only through Continuous Access. The failover flow mounts the volume
at B by resignature, registers, re-maps and starts the VMs; the disk bytes at B are
compared with what A had written. Each test has its own DR group, vdisk and datastore.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows import site_failover as sf
from flows.dr_admin import protect
from simulators import site_vms as w
from simulators.sites import TwoSites

MiB = 1 << 20
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSites]:
    with TwoSites.start(tmp_path_factory.mktemp("sitevms"), vcenters=True) as s:
        yield s


@pytest.fixture
def sites_ok(sites: TwoSites) -> Iterator[TwoSites]:
    with sites.healthy():
        yield sites


def protected(s: TwoSites, tmp: Path, name: str, vms: list[tuple[str, int]],
              mode: str = "sync", **extra: Any) -> tuple[str, dict[str, bytes]]:
    """A vdisk at A with a VMFS datastore holding `vms` (name, priority), each booting from
    an ext4 file system with /app/health, and 1 MiB of seeded random bytes written by its
    guest after it; one DR group to B made by `protect`."""
    from drivers.smis import SmisArray

    a = SmisArray(s.a.connection())
    a.create_vdisk(f"{name}-lun", 32 * MiB, "DG1")
    lun = a.present(f"{name}-lun", "esx-a").lun
    vca = s.vcenters["A"]
    ds = w.format_datastore(vca, f"DS-{name}", w.lun_id(s.a, "esx-a", lun))
    sent = {}
    for vm, _ in vms:
        w.create_vm(vca, vm, ds, 6 * MiB, power_on=False)
        w.install_guest(vca, vm, {"app/health": b"ok\n"})
        w.guest_write(vca, vm, 4 * MiB, random.Random(vm).randbytes(MiB))
        w.power_on(vca, vm)
        sent[vm] = w.disk_bytes(vca, vm)
    cfg = s.write_config(tmp / "dc.yaml", [{
        "name": name, "home": "A", "remote": "B", "vdisks": [f"{name}-lun"], "mode": mode,
        "in_sync_timeout_s": 60, "datastore": ds,
        "vms": [{"name": vm, "priority": p, "up_timeout_s": 10,
                 "probes": ["guest-file:/app/health"]} for vm, p in vms], **extra}])
    protect(str(cfg))
    return str(cfg), sent


def up(res: sf.SiteResult) -> dict[str, Any]:
    return {v.vm: v for v in res.vms if v.status == "up"}


def test_planned_failover_brings_vms_up_at_b_bit_for_bit_then_failback(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    vca, vcb = s.vcenters["A"], s.vcenters["B"]
    cfg, sent = protected(s, tmp_path, "pl", [("pl-db", 1), ("pl-app", 2), ("pl-web", 2)])
    dry = sf.failover_site(cfg, "B", planned=True, dry_run=True)
    assert any("mount VMFS volume DS-pl by resignature" in p for p in dry.plan)
    assert dry.plan[-1].startswith("pl: priority 2: register pl-app, pl-web")
    res = sf.failover_site(cfg, "B", planned=True)
    assert res.ok, (res.groups, res.vms)
    vms = up(res)
    assert set(vms) == {"pl-db", "pl-app", "pl-web"}
    assert vms["pl-db"].up_at_s <= min(vms["pl-app"].up_at_s, vms["pl-web"].up_at_s)
    assert all(v.networks == ["DR Network"] and v.probes == 1 for v in vms.values())
    for vm, data in sent.items():  # the bytes at B are what A wrote, bit for bit
        assert w.disk_bytes(vcb, vm) == data
        assert str(vcb.vm(vm).runtime.powerState) == "poweredOn"
    assert not any(vca.vm_exists(vm) for vm in sent)  # taken down at A
    assert next(iter(w.mounts(vcb))).startswith("snap-")
    again = sf.failover_site(cfg, "B", planned=True)  # a re-run finds everything done
    assert again.ok and again.groups[0].status == "already done" and len(up(again)) == 3
    later = random.Random(7).randbytes(65536)
    w.guest_write(vcb, "pl-db", 5 * MiB, later)  # the guest at B keeps working
    at_b = w.disk_bytes(vcb, "pl-db")
    s.advance_clock(901)
    back = sf.failback_site(cfg, "A")
    assert back.ok, (back.groups, back.vms)
    assert set(up(back)) == set(sent)
    assert w.disk_bytes(vca, "pl-db") == at_b and w.disk_bytes(vca, "pl-web") == sent["pl-web"]
    assert all(v.networks == ["VM Network"] for v in up(back).values())
    assert not any(vcb.vm_exists(vm) for vm in sent)


def test_unplanned_async_failover_brings_up_what_a_had_sent(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    vca, vcb = s.vcenters["A"], s.vcenters["B"]
    cfg, sent = protected(s, tmp_path, "un", [("un-vm", 1)], mode="async")
    w.flush(vca, "DS-un")  # the host writes its datastore to the LUN
    end = time.monotonic() + 30
    while s.dr_info("A", "un")["log_writes"]:
        assert time.monotonic() < end, "async replication did not drain"
        time.sleep(0.05)
    s.link(up=False)  # site A is cut off; its guest goes on writing
    w.guest_write(vca, "un-vm", 4 * MiB, b"\xff" * MiB)
    w.flush(vca, "DS-un")
    res = sf.failover_site(cfg, "B", planned=False)
    assert res.ok, (res.groups, res.vms)
    assert res.groups[0].writes_lost and res.groups[0].writes_lost > 0
    assert w.disk_bytes(vcb, "un-vm") == sent["un-vm"]  # what A had sent, not the lost tail


def test_site_b_vcenter_unreachable_mid_failover_then_rerun_continues(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    vcb = s.vcenters["B"]
    cfg, sent = protected(s, tmp_path, "vu", [("vu-1", 1), ("vu-2", 2)])
    vcb.set_fault(method="RegisterVM_Task", kind="drop", count=0)  # vCenter B goes away
    first = sf.failover_site(cfg, "B", planned=True)
    g = first.groups[0]
    assert g.status == "failed" and not first.ok
    assert "vCenter vc-B unreachable while bringing vu's VMs up at site B" in g.message
    assert "storage is failed over and presented; VMs up so far: none" in g.message
    assert s.dr_info("B", "vu")["role"] == "source" and not vcb.vm_exists("vu-1")
    vcb.clear_faults()  # vCenter B is back
    again = sf.failover_site(cfg, "B", planned=True)
    assert again.ok and again.groups[0].status == "already done", (again.groups, again.vms)
    assert set(up(again)) == {"vu-1", "vu-2"}
    assert all(w.disk_bytes(vcb, vm) == data for vm, data in sent.items())


def test_a_vm_that_will_not_power_on_is_reported_and_the_next_group_goes_on(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    vcb = s.vcenters["B"]
    cfg, _ = protected(s, tmp_path, "po", [("po-1", 1), ("po-2", 2)])
    vcb.set_fault(method="PowerOnVM_Task", kind="task", fault="InsufficientResourcesFault",
                  message="not enough memory on the host", count=1)  # the first VM started
    res = sf.failover_site(cfg, "B", planned=True)
    assert res.groups[0].status == "done" and not res.ok
    by = {v.vm: v for v in res.vms}
    assert by["po-1"].status == "failed" and by["po-1"].priority == 1
    assert "not enough memory on the host" in by["po-1"].message
    assert by["po-2"].status == "up"  # policy continue: priority 2 still started
    assert str(vcb.vm("po-1").runtime.powerState) == "poweredOff"

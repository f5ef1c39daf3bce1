"""The media leg of disaster recovery: a version restored at another site's vCenter, on a
chosen host and datastore with its NICs moved to that site's network, and on a
standalone ESX host. The path when replication itself is lost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpflow.errors import UserError
from simulators import site_vms as w
from simulators.guest_disks import MiB, make_guest_disk
from simulators.vcsim import Vcsim

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def other_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Vcsim]]:
    """Site B's vCenter (with a "DR Network") and a standalone ESX host."""
    with Vcsim(work_dir=tmp_path_factory.mktemp("vc-b"), vms_per_pool=0) as vcb, \
            Vcsim(work_dir=tmp_path_factory.mktemp("esx"), vms_per_pool=0,
                  extra_args=("-esx",)) as esx:
        w.add_port_group(vcb, "DR Network")
        yield {"vc-B": vcb, "esx-1": esx}


def config(tmp: Path, vcsim: Vcsim, others: dict[str, Vcsim], mp: pytest.MonkeyPatch) -> str:
    vcs = []
    for name, vc, dc in (("vcsim", vcsim, "DC0"), ("vc-B", others["vc-B"], "DC0"),
                         ("esx-1", others["esx-1"], "ha-datacenter")):
        var = f"DPFLOW_TEST_{name.upper().replace('-', '_')}_PASSWORD"
        mp.setenv(var, vc.password)
        vcs.append({"name": name, "host": vc.host, "port": vc.port, "user": vc.username,
                    "password": {"env": var}, "ca_file": str(vc.ca_file), "datacenter": dc})
    mp.setenv("DPFLOW_TEST_STORE_KEY", "ab" * 32)
    path = tmp / "dpflow.yaml"
    path.write_text(yaml.safe_dump({"vcenters": vcs, "stores": [
        {"name": "library", "path": "store", "key": {"env": "DPFLOW_TEST_STORE_KEY"}}]}))
    return str(path)


def test_restore_at_another_vcenter_and_on_a_standalone_esx_host(
        vcsim: Any, other_sites: dict[str, Vcsim], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.vm_image import backup_vm_image, restore_vm_image

    cfg = config(tmp_path, vcsim, other_sites, monkeypatch)
    vm = f"dr-{uuid.uuid4().hex[:8]}"
    w.create_vm(vcsim, vm, "LocalDS_0", 8 * MiB, power_on=False)  # one NIC on "VM Network"
    make_guest_disk(tmp_path / "d.img", 8 * MiB, seed=11)
    vcsim.seed_disk(vm, 0, tmp_path / "d.img")
    data = (tmp_path / "d.img").read_bytes()
    r = backup_vm_image(cfg, vm)
    assert r.status == "completed", r.message
    vcb, esx = other_sites["vc-B"], other_sites["esx-1"]
    with pytest.raises(UserError, match="cannot restore to vCenter vc-B: no network 'Lab'"):
        restore_vm_image(cfg, vm, r.version_id, as_name=vm, vcenter="vc-B",
                         network_map={"VM Network": "Lab"})
    assert not vcb.vm_exists(vm)  # refused before anything was created
    rr = restore_vm_image(cfg, vm, r.version_id, as_name=vm, vcenter="vc-B",
                          datastore="LocalDS_0", host="DC0_C0_H1",
                          network_map={"VM Network": "DR Network"}, power_on_after=True)
    assert rr.created and rr.verified and rr.powered_on
    at_b = vcb.vm(vm)
    assert at_b.runtime.host.name == "DC0_C0_H1"
    assert [d.backing.deviceName for d in at_b.config.hardware.device
            if hasattr(d, "macAddress")] == ["DR Network"]
    assert vcb.current_disk_path(vm, 0).read_bytes()[:len(data)] == data
    on_esx = restore_vm_image(cfg, vm, r.version_id, as_name=vm, vcenter="esx-1")
    assert on_esx.created and on_esx.verified
    assert esx.current_disk_path(vm, 0).read_bytes()[:len(data)] == data
    assert esx.si().content.about.apiType == "HostAgent"

"""Instant VM Recovery against vcsim on real bytes: a version runs from the store at once
(published over FUSE, mounted as an NFS datastore), its guest reads its files, writes
stay in the overlay, and abort leaves nothing behind: no VM, datastore, mount or overlay,
the store unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dpflow.environment import environment
from tests.integration.test_restore_proofs import backed_up_vm, lab_config

pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def packs_digest(cfg: Path) -> str:
    root = environment(cfg).store("library").root
    h = hashlib.sha256()
    for p in sorted((root / "packs").rglob("*.pack")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def datastores(vcsim) -> set[str]:
    content = vcsim.si().content
    return {d.name for dc in content.rootFolder.childEntity for d in dc.datastore}


def test_instant_recovery_runs_the_version_and_abort_leaves_nothing(vcsim, dc_config, tmp_path,
                                                                    monkeypatch):
    from dpflow.errors import UserError
    from drivers.vsphere_guest import GuestFiles
    from drivers.vsphere_lab import IsolatedLab
    from flows.instant import abort_instant_recovery, instant_recover_vm
    from tasks.instant import load, state_path

    name, version, hostname = backed_up_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    before = packs_digest(cfg)
    r = instant_recover_vm(str(cfg), name, as_name=f"{name}-ivr")
    assert r.version_id == version and r.datastore in datastores(vcsim)
    env = environment(cfg)
    hv = env.hypervisor("vcsim")
    info = hv.find_vm(r.name)
    assert info.power_state == "poweredOn"
    assert all(d.file_name.startswith(f"[{r.datastore}] ") for d in info.disks)
    assert IsolatedLab(hv).heartbeat(info) == ("green", "guestToolsRunning")
    assert GuestFiles(hv, info, "root", vcsim.guest_password).exists("/etc/hostname")
    # the disk as the datastore serves it is the version's disk, byte for byte
    reader = hv.open_disk(info.disks[0])
    try:
        head = reader.read(0, 1 << 20)
    finally:
        reader.close()
    img = tmp_path / f"{name}.img"
    assert head == img.read_bytes()[:1 << 20]
    # a write of the running VM lands in the overlay, never in the store
    state = load(r.name)
    flat = Path(state.mount) / name / "disk0-flat.vmdk"
    fd = os.open(flat, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xab" * 4096, 8 << 20)
        assert os.pread(fd, 4, 8 << 20) == b"\xab" * 4
    finally:
        os.close(fd)
    with pytest.raises(UserError, match="already exists"):
        instant_recover_vm(str(cfg), name, as_name=r.name)

    assert abort_instant_recovery(str(cfg), r.name) == []
    assert not vcsim.vm_exists(r.name)
    assert r.datastore not in datastores(vcsim)
    assert not os.path.ismount(state.mount) and not Path(state.overlay).exists()
    assert not state_path(r.name).exists()
    assert packs_digest(cfg) == before  # the store was never written

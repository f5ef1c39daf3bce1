"""Transports: direct (the datastore's directory, as SAN or Direct NFS) and network
(HTTPS through the host), against vcsim whose datastore is a real directory.

The same VM backed up both ways gives the same version chunk for chunk; the direct
read holds the point in time while the guest writes; a datastore the proxy cannot see
falls back to the network; a direct restore leaves zero chunks as holes.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from dpflow.environment import environment
from dpflow.errors import UserError
from dpflow.store.manifest import read_manifest
from simulators.guest_disks import MiB, make_guest_disk

pytestmark = pytest.mark.usefixtures("prefect_server")


def config(base: Path, name: str, proxy: dict) -> str:
    """A copy of the test's data-centre file with its own store, catalog and proxy."""
    cfg = yaml.safe_load(base.read_text())
    cfg["stores"][0]["path"] = f"store-{name}"
    cfg["catalog_url"] = f"sqlite:///catalog-{name}.db"
    cfg["proxies"] = [proxy]
    path = base.with_name(f"dpflow-{name}.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def new_vm(vcsim, tmp_path: Path, size: int) -> tuple[str, bytes]:
    name = f"tr-{uuid.uuid4().hex[:10]}"
    vcsim.create_vm(name, [size])
    img = tmp_path / f"{name}.img"
    make_guest_disk(img, size, seed=len(name))
    vcsim.seed_disk(name, 0, img)
    return name, img.read_bytes()


def disk_manifest(cfg: str, version_id: str):
    env = environment(Path(cfg))
    row = env.catalog().version(version_id)
    return read_manifest(env.store(row.store), version_id).disks[0], row.note


def live(vcsim, vm: str, size: int) -> bytes:
    with open(vcsim.current_disk_path(vm, 0), "rb") as f:
        return f.read(size)


def test_direct_and_network_give_the_same_version_and_restore_sparse(
        vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image

    ds = {"LocalDS_0": str(vcsim.datastore_dir)}
    net = config(dc_config, "net", {"transports": ["network"], "datastores": ds})
    direct = config(dc_config, "direct", {"transports": ["direct", "network"],
                                          "datastores": ds})
    vm, data = new_vm(vcsim, tmp_path, 24 * MiB)
    r_net = backup_vm_image(net, vm)
    r_dir = backup_vm_image(direct, vm)
    m_net, note_net = disk_manifest(net, r_net.version_id)
    m_dir, note_dir = disk_manifest(direct, r_dir.version_id)
    assert (m_net.transport, m_dir.transport) == ("network", "direct")
    assert "transport network" in note_net and "transport direct" in note_dir
    assert m_dir.chunks == m_net.chunks and m_dir.stored_chunks > 0  # bit for bit
    assert r_dir.bytes_read == r_net.bytes_read

    rr = restore_vm_image(direct, vm, r_dir.version_id, as_name=f"{vm}-r")
    assert rr.verified
    assert live(vcsim, f"{vm}-r", len(data)) == data
    # zero chunks left as holes: the file holds about the version's data, not the disk
    allocated = vcsim.current_disk_path(f"{vm}-r", 0).stat().st_blocks * 512
    data_bytes = m_dir.stored_chunks * m_dir.chunk_size
    assert data_bytes < 0.6 * len(data)  # half of this disk is zeros
    assert allocated <= data_bytes + MiB  # (+ the file system's own extent blocks)


def test_direct_read_holds_the_point_in_time_while_the_guest_writes(
        vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image, restore_vm_image

    cfg = config(dc_config, "pit", {"datastores": {"LocalDS_0": str(vcsim.datastore_dir)}})
    vm, data = new_vm(vcsim, tmp_path, 32 * MiB)
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
        r = backup_vm_image(cfg, vm)
    finally:
        stop.set()
        t.join()
    assert wrote, "the guest never wrote while the snapshot existed"
    assert disk_manifest(cfg, r.version_id)[0].transport == "direct"
    assert live(vcsim, vm, len(data)) != data  # the live disk did change
    restore_vm_image(cfg, vm, r.version_id, as_name=f"{vm}-r")
    assert live(vcsim, f"{vm}-r", len(data)) == data


def test_datastore_not_visible_falls_back_to_network(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    elsewhere = tmp_path / "not-the-datastore"
    elsewhere.mkdir()
    cfg = config(dc_config, "fallback", {"datastores": {"LocalDS_0": str(elsewhere)}})
    vm, _ = new_vm(vcsim, tmp_path, 8 * MiB)
    r = backup_vm_image(cfg, vm)
    m, note = disk_manifest(cfg, r.version_id)
    assert r.status == "completed" and m.transport == "network"
    assert "transport network" in note

    only_direct = config(dc_config, "only-direct", {
        "transports": ["direct"], "datastores": {"LocalDS_0": str(elsewhere)}})
    with pytest.raises(UserError, match="not visible"):
        backup_vm_image(only_direct, vm)
    assert vcsim.snapshot_count(vm) == 0  # the snapshot was released
    assert not os.listdir(elsewhere)


def test_cli_restores_a_version_to_sparse_image_files(vcsim, dc_config, tmp_path):
    """`dpflow restore vm NAME --to-dir DIR`: a store operation, zeros left as holes."""
    import subprocess
    import sys

    from flows.vm_image import backup_vm_image

    vm, data = new_vm(vcsim, tmp_path, 16 * MiB)
    backup_vm_image(str(dc_config), vm)
    out = tmp_path / "images"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dpflow_cli", "restore", "vm", vm,
                               "--to-dir", str(out), "-c", str(dc_config), *args],
                              capture_output=True, text=True, env=dict(os.environ))

    p = cli()
    assert p.returncode == 2 and "not a directory" in p.stderr + p.stdout
    out.mkdir()
    p = cli()
    assert p.returncode == 0, p.stderr
    image = out / f"{vm}-disk0.img"
    assert image.read_bytes() == data
    assert image.stat().st_blocks * 512 < 0.6 * len(data)  # half of this disk is zeros
    p = cli()
    assert p.returncode == 2 and "--force" in p.stderr + p.stdout
    assert cli("--force").returncode == 0 and image.read_bytes() == data

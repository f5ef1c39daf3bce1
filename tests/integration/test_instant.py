"""Instant VM Recovery against vcsim on real bytes: a version runs from the store at once
(published over FUSE, mounted as an NFS datastore), its guest reads its files, writes
stay in the overlay, and abort leaves nothing behind: no VM, datastore, mount or overlay,
the store unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dpflow.environment import environment
from dpflow.guestfs import RangeFile, discover
from tests.integration.test_restore_proofs import backed_up_vm, lab_config

pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def packs_digest(cfg: Path) -> str:
    root = environment(cfg).store("library").root
    h = hashlib.sha256()
    for p in sorted((root / "packs").rglob("*.pack")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


class _FileReader:
    def __init__(self, f) -> None:
        self.f = f

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.f.fileno(), length, offset)


def four_gib_vm(vcsim, cfg: Path, tmp_path: Path) -> tuple[str, str, bytes]:
    """A VM whose 4 GiB thin disk holds a small ext4 file system at its start and holes
    after it, backed up (only the allocated areas are read); (name, version, a file's
    bytes: /srv/data.bin)."""
    import uuid

    from flows.vm_image import backup_vm_image
    from simulators.guest_disks import make_ext4

    name, data = f"iv4-{uuid.uuid4().hex[:8]}", os.urandom(1 << 20)
    vcsim.create_vm(name, [4 << 30], networks=("VM Network", "VM Network"))
    img = tmp_path / f"{name}.img"
    make_ext4(img, 12 << 20, {"etc/hostname": f"{name}\n".encode(), "srv/data.bin": data})
    os.truncate(img, 4 << 30)
    vcsim.seed_disk(name, 0, img)
    r = backup_vm_image(str(cfg), name)
    assert r.status == "completed"
    return name, r.version_id, data


def guest_read(vcsim, vm: str, path: str) -> bytes:
    """A file's bytes as the running guest gives them (guest operations: download)."""
    import requests
    from pyVmomi import vim

    content = vcsim.si().content
    auth = vim.vm.guest.NamePasswordAuthentication(username="root",
                                                   password=vcsim.guest_password)
    info = content.guestOperationsManager.fileManager.InitiateFileTransferFromGuest(
        vm=vcsim.vm(vm), auth=auth, guestFilePath=path)
    got = requests.get(info.url.replace("*", f"{vcsim.host}:{vcsim.port}", 1),
                       verify=str(vcsim.ca_file), timeout=60)
    got.raise_for_status()
    return got.content


def datastores(vcsim) -> set[str]:
    content = vcsim.si().content
    return {d.name for dc in content.rootFolder.childEntity for d in dc.datastore}


def test_a_4gib_version_runs_at_once_its_guest_reads_a_file_and_abort_leaves_nothing(
        vcsim, dc_config, tmp_path, monkeypatch):
    """A 4 GiB version (12 MiB of it written) runs from the store: the guest reads a file
    of it with the right bytes; its saved NICs are on the isolated network (a network
    that does not exist is refused)."""
    from dpflow.errors import UserError
    from drivers.vsphere_lab import IsolatedLab
    from flows.instant import instant_recover_vm
    from tasks.instant import load, state_path, take_down

    name, version, data = four_gib_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    before = packs_digest(cfg)
    r = instant_recover_vm(str(cfg), name, as_name=f"{name}-ivr")
    try:
        assert r.disk_bytes == 4 << 30
        assert guest_read(vcsim, r.name, "/srv/data.bin") == data
        env = environment(cfg)
        lab, hv = IsolatedLab(env.hypervisor("vcsim")), env.hypervisor("vcsim")
        assert lab.networks(hv.find_vm(name)) == ["VM Network"] * 2  # the saved NICs...
        assert lab.networks(hv.find_vm(r.name)) == [env.dc.restore_tests.network] * 2  # isolated
        with pytest.raises(UserError, match="no network 'no-such-net'"):
            instant_recover_vm(str(cfg), name, as_name=f"{name}-net", network="no-such-net")
        check_running_then_abort(vcsim, cfg, tmp_path, name, version, r)
    finally:
        if state_path(r.name).exists():  # a failed check above: take it down anyway
            take_down(environment(cfg), load(r.name))
    assert packs_digest(cfg) == before  # the store was never written


def check_running_then_abort(vcsim, cfg: Path, tmp_path: Path, name: str, version: str,
                             r) -> None:
    from dpflow.errors import UserError
    from drivers.vsphere_guest import GuestFiles
    from drivers.vsphere_lab import IsolatedLab
    from flows.instant import abort_instant_recovery, instant_recover_vm
    from tasks.instant import load, state_path

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
    with open(tmp_path / f"{name}.img", "rb") as f:
        assert head == f.read(1 << 20)
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


def overlay_state(version_img: Path, overlay: Path, disk: int = 0) -> bytes:
    """The published disk as the guest sees it, from files alone: the version's bytes, and
    in every chunk the overlay's chunk map names, the overlay's bytes."""
    from dpflow.published import map_path, read_map

    data = bytearray(version_img.read_bytes())
    mapped = read_map(map_path(overlay / f"disk{disk}.data"))
    assert mapped, "the guest wrote nothing to the overlay: nothing to prove"
    cs = json.loads((overlay / "publish.json").read_text())["disks"][disk]["chunk_size"]
    with open(overlay / f"disk{disk}.data", "rb") as f:
        for i in mapped:
            data[i * cs:(i + 1) * cs] = os.pread(f.fileno(), cs, i * cs)[:len(data) - i * cs]
    return bytes(data)


def test_migration_under_guest_writes_ends_bit_for_bit_equal_to_the_overlay(
        vcsim, dc_config, tmp_path, monkeypatch):
    """No room → refused before it starts; then the running VM moves to LocalDS_0 while its
    guest writes files: the whole migrated disk, read from its file at the switch, equals
    the overlay's final state (the version's bytes plus the overlay's chunks) bit for bit;
    the guest writes on after the switch and loses nothing; the published datastore and
    the overlay are gone, the store unchanged."""
    import threading
    import time

    import flows.instant
    from dpflow.errors import UserError
    from drivers.vsphere_guest import GuestFiles
    from flows.instant import instant_recover_vm, migrate_instant_recovery
    from tasks.instant import load, state_path, take_down

    name, _, _ = backed_up_vm(vcsim, dc_config, tmp_path, networks=("VM Network",))
    version_img = tmp_path / f"{name}.img"
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    before = packs_digest(cfg)
    r = instant_recover_vm(str(cfg), name, as_name=f"{name}-mig", network="VM Network")
    state = load(r.name)
    try:
        assert environment(cfg).hypervisor("vcsim").find_vm(r.name).networks == ["VM Network"]
        vcsim.set_datastore_free(1 << 20)
        with pytest.raises(UserError, match="nothing was started"):
            migrate_instant_recovery(str(cfg), r.name)
        vcsim.set_datastore_free(None)
        assert load(r.name).mounted and vcsim.vm_exists(r.name)  # still running from the store
        hv = environment(cfg).hypervisor("vcsim")
        gf = GuestFiles(hv, hv.find_vm(r.name), "root", vcsim.guest_password)
        gf.mkdir("/migrate")
        stop, wrote, gate = threading.Event(), [], threading.Lock()
        errors: list[BaseException] = []

        def guest() -> None:  # the guest keeps writing files, before and after the switch
            try:
                while not stop.is_set():
                    data = os.urandom(8192)
                    with gate:
                        gf.upload(f"/migrate/f{len(wrote)}", [data], len(data), overwrite=True)
                        wrote.append(data)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        real_migrate, seen = flows.instant.migrate, {}

        def migrate_at_switch(env, st, target):
            """The switch-over, as the flow makes it: the guest's write in flight ends, the
            copy and the switch run (atomic, as a host's mirror driver makes them), and the
            migrated disk is read from its file before the guest writes again."""
            with gate:
                seen["writes_before"] = len(wrote)
                seen["expected"] = overlay_state(version_img, Path(st.overlay))
                seen["published"] = (Path(st.mount) / name / "disk0-flat.vmdk").read_bytes()
                info = real_migrate(env, st, target)
                final = vcsim.local_path(info.disks[0].file_name)
                seen["migrated"] = final.with_name(
                    final.name.replace(".vmdk", "-flat.vmdk")).read_bytes()
            return info

        monkeypatch.setattr(flows.instant, "migrate", migrate_at_switch)
        t = threading.Thread(target=guest)
        t.start()
        try:
            deadline = time.monotonic() + 120
            while len(wrote) < 2:
                assert t.is_alive() and time.monotonic() < deadline, errors
                stop.wait(0.05)
            m = migrate_instant_recovery(str(cfg), r.name)
            n_after = len(wrote)
            while len(wrote) < n_after + 2:  # the guest writes on, to the migrated disk
                assert t.is_alive() and time.monotonic() < deadline, errors
                stop.wait(0.05)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        assert seen["writes_before"] >= 2
        assert seen["expected"] != version_img.read_bytes()  # the overlay holds the writes
        assert seen["published"] == seen["expected"]  # what the guest saw at the switch
        assert len(seen["migrated"]) == len(seen["expected"])
        assert hashlib.sha256(seen["migrated"]).digest() == \
            hashlib.sha256(seen["expected"]).digest()  # the whole disk, bit for bit
        info = hv.find_vm(r.name)
        assert m.datastore == "LocalDS_0" and info.power_state == "poweredOn"
        assert all(d.datastore == "LocalDS_0" for d in info.disks)
        assert r.datastore not in datastores(vcsim) and not os.path.ismount(state.mount)
        assert not Path(state.overlay).exists() and not state_path(r.name).exists()
        # every file the guest wrote, before and after the switch, is on the migrated disk
        # with its bytes (read from the disk file, not through the guest)
        final = vcsim.local_path(info.disks[0].file_name)
        flat = final.with_name(final.name.replace(".vmdk", "-flat.vmdk"))
        with open(flat, "rb") as f:
            dev = RangeFile(_FileReader(f), info.disks[0].capacity_bytes)
            (vol,) = [v for _, v in discover(dev, info.disks[0].capacity_bytes) if v]
            for n, data in enumerate(wrote):
                with vol.open(vol.lookup(("migrate", f"f{n}"))) as g:
                    assert g.read() == data, n
    finally:
        vcsim.set_datastore_free(None)
        if state_path(r.name).exists():
            take_down(environment(cfg), load(r.name))
    assert packs_digest(cfg) == before


def test_a_store_lost_under_a_running_recovery_is_told_and_production_untouched(
        vcsim, dc_config, tmp_path, monkeypatch):
    """The store goes away while the recovered VM runs: the publishing server says so in its
    log, `instant-recover --status` says so (exit 1), a migration is refused before it
    starts; the production VM, its disk and the target datastore are untouched; the store
    back, the server says so and abort leaves nothing."""
    import time

    from prefect.settings import PREFECT_API_URL

    from dpflow.errors import UserError
    from flows.instant import abort_instant_recovery, instant_recover_vm, migrate_instant_recovery
    from tasks.instant import load, state_path, take_down
    from tests.integration.test_cli import run

    name, _, _ = backed_up_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    before = packs_digest(cfg)
    prod = vcsim.vm(name)
    prod_disk = vcsim.current_disk_path(name, 0)
    prod_before = (prod.runtime.powerState, hashlib.sha256(prod_disk.read_bytes()).digest())
    root = environment(cfg).store("library").root
    away = root.with_name(root.name + ".unreachable")
    r = instant_recover_vm(str(cfg), name, as_name=f"{name}-lost")
    state = load(r.name)
    log = Path(state.overlay) / "server.log"
    home = vcsim.local_path(f"[LocalDS_0] {r.name}")  # the recovered VM's configuration
    home_before = sorted(p.name for p in home.iterdir())
    try:
        root.rename(away)  # the store's share is gone
        deadline = time.monotonic() + 30
        while "STORE UNREACHABLE" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        (notice,) = [ln for ln in log.read_text().splitlines() if "STORE UNREACHABLE" in ln]
        assert str(root) in notice and "production is untouched" in notice, notice
        code, out = run("instant-recover", "--status", "-c", str(cfg))
        assert code == 1, out
        assert r.name in out and "is unreachable" in out and str(root) in out, out
        with pytest.raises(UserError, match="unreachable.*nothing was started"):
            migrate_instant_recovery(str(cfg), r.name)
        assert vcsim.vm(r.name).runtime.powerState == "poweredOn"  # still running
        assert sorted(p.name for p in home.iterdir()) == home_before  # no disk copied
        assert (vcsim.vm(name).runtime.powerState,
                hashlib.sha256(prod_disk.read_bytes()).digest()) == prod_before
        away.rename(root)  # back
        deadline = time.monotonic() + 30
        while "reachable again" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert abort_instant_recovery(str(cfg), r.name) == []
    finally:
        if away.exists():
            away.rename(root)
        if state_path(r.name).exists():
            take_down(environment(cfg), load(r.name))
    assert not vcsim.vm_exists(r.name) and r.datastore not in datastores(vcsim)
    assert packs_digest(cfg) == before

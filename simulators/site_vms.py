"""The world around the site failover: an administrator and guests at a site.

These helpers use pyVmomi and the simulator's control endpoint directly, never dpflow's
drivers, so the failover flow is checked against something it did not build itself:
- `format_datastore`: the site's host formats a VMFS volume on a LUN presented to it
  (QueryAvailableDisksForVmfs + CreateVmfsDatastore), as an administrator does once.
- `create_vm`: a VM whose files live on that datastore.
- `install_guest`: an ext4 file system on the VM's first disk (the guest boots from it).
- `guest_write` / `disk_bytes`: a guest writing to / the bytes of the VM's first disk.
- `flush`: the host writing its datastore back to the LUN (simulators/vcsim/vmfs.go).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyVim.task import WaitForTask
from pyVmomi import vim

from simulators.eva.process import EvaServer
from simulators.vcsim import Vcsim


def _dc(vc: Vcsim) -> vim.Datacenter:
    return vc.si().content.rootFolder.childEntity[0]


def _esx(vc: Vcsim) -> vim.HostSystem:
    return _dc(vc).hostFolder.childEntity[0].host[0]


def add_port_group(vc: Vcsim, name: str) -> None:
    """A port group (a network) on the first host's vSwitch0, as an administrator adds one."""
    _esx(vc).configManager.networkSystem.AddPortGroup(portgrp=vim.host.PortGroup.Specification(
        name=name, vlanId=0, vswitchName="vSwitch0", policy=vim.host.NetworkPolicy()))


def lun_id(array: EvaServer, host: str, lun: int) -> str:
    """The naa id the array gives LUN `lun` of `host` (what ESX shows as the device)."""
    r = array.http.get(f"{array.url}/san/{host}")
    r.raise_for_status()
    return str(next(x["id"] for x in r.json() if x["lun"] == lun))


def format_datastore(vc: Vcsim, label: str, device: str) -> str:
    """A VMFS datastore `label` on the blank LUN whose naa id is `device`."""
    esx = _esx(vc)
    esx.configManager.storageSystem.RescanAllHba()
    dss = esx.configManager.datastoreSystem
    disks = [d for d in dss.QueryAvailableDisksForVmfs() if d.canonicalName == device]
    if not disks:
        raise RuntimeError(f"LUN {device} is not presented to the site's hosts, or not blank")
    spec = vim.host.VmfsDatastoreCreateSpec(
        diskUuid=disks[0].uuid, partition=vim.host.DiskPartitionInfo.Specification(),
        vmfs=vim.host.VmfsVolume.Specification(
            volumeName=label, majorVersion=6,
            extent=vim.host.ScsiDisk.Partition(diskName=disks[0].canonicalName, partition=1)))
    return str(dss.CreateVmfsDatastore(spec=spec).name)


def mounts(vc: Vcsim) -> dict[str, dict[str, str]]:
    """The simulator's LUN-backed datastores: name → device, dir, uuid."""
    out: dict[str, dict[str, str]] = vc._control("GET", "/_vmfs")
    return out


def flush(vc: Vcsim, datastore: str) -> None:
    vc._control("POST", "/_vmfs", {"op": "sync", "datastore": datastore})


def create_vm(vc: Vcsim, name: str, datastore: str, disk_bytes: int,
              network: str = "VM Network", power_on: bool = True) -> str:
    """A VM with one disk of `disk_bytes` on `datastore` and one NIC on `network`."""
    moref = vc.create_vm(name, [disk_bytes], datastore=datastore)
    vm = vc.vm(name)
    net = next(n for n in _dc(vc).network if n.name == network)
    nic = vim.vm.device.VirtualE1000(
        key=-1, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=network, network=net))
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)])))
    if power_on:
        WaitForTask(vm.PowerOnVM_Task())
    return moref


def _flat(vc: Vcsim, vm: str) -> Path:
    disk = next(d for d in vc.vm(vm).config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk))
    ds, _, rel = disk.backing.fileName.partition("] ")
    ds = ds.lstrip("[")
    base = Path(mounts(vc)[ds]["dir"]) if ds in mounts(vc) else vc.datastores[ds]
    local = base / rel
    return local.with_name(local.name.removesuffix(".vmdk") + "-flat.vmdk")


def install_guest(vc: Vcsim, vm: str, files: dict[str, bytes], fs_bytes: int = 2 << 20) -> None:
    """Put an ext4 file system holding `files` at the start of the VM's first disk: the
    simulated guest boots (tools, heartbeat) and guest operations see the files."""
    import tempfile

    from simulators.guest_fs_images import ext4_from_tree, write_tree

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "fs.img"
        ext4_from_tree(image, fs_bytes, lambda root: write_tree(root, files))
        guest_write(vc, vm, 0, image.read_bytes())


def guest_write(vc: Vcsim, vm: str, offset: int, data: bytes) -> None:
    fd = os.open(_flat(vc, vm), os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def disk_bytes(vc: Vcsim, vm: str) -> bytes:
    return _flat(vc, vm).read_bytes()


def power_off(vc: Vcsim, vm: str) -> None:
    WaitForTask(vc.vm(vm).PowerOffVM_Task())


def power_on(vc: Vcsim, vm: str) -> None:
    WaitForTask(vc.vm(vm).PowerOnVM_Task())

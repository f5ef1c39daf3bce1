"""Instant VM Recovery on a vCenter (pyVmomi): an NFS datastore mounted on an ESX host,
and a VM registered on disk files that already exist there.

mount_nfs asks the host to mount remoteHost:remotePath as datastore `name`
(HostDatastoreSystem.CreateNasDatastore); unmount_nfs removes it again (RemoveDatastore,
refused while a VM uses it). register_vm creates a VM from a saved configuration whose
disks are the given existing files (no file operation: nothing is created or copied),
its configuration files on `config_datastore`, its NICs on the networks given. relocate
moves a running VM's disks to another datastore (Storage vMotion). Errors translated as in
drivers/vsphere.py.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from drivers.errors import NotFound
from drivers.protocols import VmInfo
from drivers.vsphere import nic_changes


class InstantRecovery:
    """Over a logged-in drivers.vsphere.VSphere."""

    def __init__(self, hv: Any) -> None:
        self.hv = hv

    def _host(self, name: str) -> Any:
        dc = self.hv._datacenter()
        for entity in dc.hostFolder.childEntity:
            for h in getattr(entity, "host", []) or []:
                if h.name == name:
                    return h
        raise NotFound(f"no ESX host '{name}' in datacenter {dc.name}")

    def _datastore(self, host: Any, name: str) -> Any | None:
        return next((d for d in host.datastore if d.name == name), None)

    def mount_nfs(self, host: str, name: str, remote_host: str, remote_path: str) -> None:
        """Datastore `name` = remote_host:remote_path on `host` (a mount that exists is kept)."""
        def go() -> None:
            h = self._host(host)
            if self._datastore(h, name) is not None:
                return
            spec = vim.host.NasVolume.Specification(
                remoteHost=remote_host, remotePath=remote_path, localPath=name,
                accessMode="readWrite", type="NFS")
            h.configManager.datastoreSystem.CreateNasDatastore(spec=spec)
        self.hv._call(f"mount NFS datastore {name} on {host}", go)

    def unmount_nfs(self, host: str, name: str) -> None:
        """Remove the datastore `name` from `host`; one that is gone is fine."""
        def go() -> None:
            h = self._host(host)
            ds = self._datastore(h, name)
            if ds is not None:
                h.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
        self.hv._call(f"unmount datastore {name} from {host}", go)

    def network_names(self) -> set[str]:
        """The networks of the datacenter (port groups and distributed port groups)."""
        return set(self.hv._call("list networks",
                                 lambda: [n.name for n in self.hv._datacenter().network]))

    def register_vm(self, spec: VmInfo, name: str, marker: str, host: str,
                    disk_files: list[str], config_datastore: str,
                    networks: list[str] | None = None) -> VmInfo:
        """A VM with the spec's hardware whose disks are the existing `disk_files`, one NIC
        per entry of `networks` on that network."""
        def go() -> VmInfo:
            dc = self.hv._datacenter()
            h = self._host(host)
            pool = h.parent.resourcePool
            devs = [vim.vm.device.VirtualDeviceSpec(
                operation="add", device=vim.vm.device.VirtualLsiLogicController(
                    key=1000, busNumber=0, sharedBus="noSharing"))]
            for i, (d, f) in enumerate(zip(spec.disks, disk_files, strict=True)):
                devs.append(vim.vm.device.VirtualDeviceSpec(
                    operation="add", device=vim.vm.device.VirtualDisk(
                        key=-(i + 1), controllerKey=1000, unitNumber=i if i < 7 else i + 1,
                        capacityInKB=(d.capacity_bytes + 1023) // 1024,
                        capacityInBytes=d.capacity_bytes,
                        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                            fileName=f, diskMode="persistent", thinProvisioned=True))))
            devs += nic_changes(dc, networks or [])
            cfg = vim.vm.ConfigSpec(name=name, numCPUs=spec.num_cpu, memoryMB=spec.memory_mb,
                                    guestId=spec.guest_id, deviceChange=devs,
                                    annotation=marker or None,
                                    files=vim.vm.FileInfo(vmPathName=f"[{config_datastore}]"))
            vm = self.hv.wait(dc.vmFolder.CreateVM_Task(config=cfg, pool=pool, host=h),
                              "register VM")
            info: VmInfo = self.hv._vm_info(vm)
            return info
        result: VmInfo = self.hv._call(f"register VM {name}", go)
        return result

    def relocate(self, vm: VmInfo, datastore: str) -> VmInfo:
        """Move the running VM's disks to `datastore` (RelocateVM_Task: Storage vMotion,
        the host copies and switches); the VM as it is afterwards."""
        def go() -> VmInfo:
            obj = self.hv._vm_by_moref(vm.moref)
            ds = next((d for d in obj.runtime.host.datastore if d.name == datastore), None)
            if ds is None:
                raise NotFound(f"host {obj.runtime.host.name} has no datastore '{datastore}'")
            self.hv.wait(obj.RelocateVM_Task(spec=vim.vm.RelocateSpec(datastore=ds)),
                         "relocate VM")
            info: VmInfo = self.hv._vm_info(obj)
            return info
        result: VmInfo = self.hv._call(f"migrate VM {vm.name} to {datastore}", go)
        return result

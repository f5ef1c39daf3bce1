"""The database host's disks in vcsim: its datafile LUNs as pass-through RDM disks.

What an administrator does in the vSphere client (Add Hard Disk → RDM Disk, physical
compatibility): each LUN of the array appears on the VM as a VirtualDisk whose backing
names the LUN (deviceName /vmfs/devices/disks/naa.<WWN>, lunUuid), with a mapping file
on a datastore.
"""

from __future__ import annotations

from typing import Any

from pyVim.task import WaitForTask
from pyVmomi import vim


def attach_rdms(sim: Any, vm_name: str, wwns: list[str], datastore: str = "LocalDS_0") -> None:
    """One physical-mode RDM disk per LUN WWN on `vm_name` (units after its own disks)."""
    vm = sim.vm(vm_name)
    devices = vm.config.hardware.device
    ctl = next(d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController))
    used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == ctl.key}
    units = [u for u in range(16) if u != 7 and u not in used]
    changes = []
    for i, wwn in enumerate(wwns):
        naa = wwn.replace("-", "").lower()
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation="add", fileOperation="create",
            device=vim.vm.device.VirtualDisk(
                key=-(300 + i), controllerKey=ctl.key, unitNumber=units[i], capacityInKB=1024,
                backing=vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
                    compatibilityMode="physicalMode", diskMode="independent_persistent",
                    deviceName=f"/vmfs/devices/disks/naa.{naa}",
                    lunUuid=f"02000000{naa}485356353630",
                    fileName=f"[{datastore}] {vm_name}/{vm_name}_rdm{units[i]}.vmdk"))))
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes)))

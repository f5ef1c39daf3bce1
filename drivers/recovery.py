"""What a recovery site's vCenter does with replicated storage, as a Protocol.

Contract (the pyVmomi adapter in drivers/vsphere_recovery.py; checked by
tests/integration/test_site_vms.py against two vCenter simulators on two arrays):
- A replicated VMFS volume presented to a host shows up, after a rescan, as an
  *unresolved* volume (its signature names the source's device): it is mounted by
  resignaturing, which gives a new datastore named "snap-<8 hex>-<label>". Mounting is
  idempotent: a datastore already mounted from that label is returned.
- A VM is registered from its .vmx on that datastore; registering a VM whose .vmx is
  already registered returns the existing VM.
- Network re-mapping edits each NIC whose network is in the mapping; other NICs stay.
- Unmounting at the site that gives the storage up: VMs powered off (the host writes its
  cache back to the LUN), unregistered, then the datastore removed; each step skips what
  is already done.
Errors: unreachable vCenter → TransientError; vSphere faults → PermanentError with the
fault's name and words.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class UnresolvedVolume(BaseModel):
    label: str
    uuid: str
    device_path: str  # the head extent's device path, e.g. /vmfs/devices/disks/naa.…:1


class VmHealth(BaseModel):
    name: str
    power_state: str  # poweredOn | poweredOff | suspended
    heartbeat: str  # green | yellow | red | gray (the guest tools' heartbeat)
    networks: list[str]  # the network of each NIC, in device order


@runtime_checkable
class SiteRecovery(Protocol):
    def placement_problems(self, datastore: str, host: str | None,
                           networks: list[str]) -> list[str]:
        """What a VM placed on this datastore, host and networks would lack (empty: none)."""

    def rescan_storage(self) -> None:
        """Rescan HBAs and VMFS volumes of every host of the datacenter."""

    def unresolved_volumes(self) -> list[UnresolvedVolume]: ...

    def mount_volume(self, label: str) -> str:
        """Mount the replicated VMFS volume `label` by resignature; its datastore name."""

    def register_vm(self, datastore: str, vm: str) -> str:
        """Register `[datastore] vm/vm.vmx` as VM `vm`; its moref."""

    def remap_networks(self, vm: str, mapping: dict[str, str]) -> list[str]:
        """Move the VM's NICs to this site's networks; the networks now."""

    def vm_health(self, vm: str) -> VmHealth: ...

    def mounted_volume(self, label: str) -> str | None:
        """The datastore of VMFS volume `label` on this vCenter, if mounted."""

    def release_volume(self, label: str, vms: list[str]) -> list[str]:
        """Power off and unregister `vms`, remove the volume's datastore; what was done."""

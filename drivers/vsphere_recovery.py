"""Recovery-site operations of the pyVmomi adapter (drivers/recovery.py's contract).

Why a mixin of VSphere: the same login, timeouts and error translation serve the backup
and the recovery calls; only the calls differ. The order is an administrator's: rescan,
QueryUnresolvedVmfsVolumes, ResignatureUnresolvedVmfsVolume_Task, RegisterVM_Task,
ReconfigVM_Task for the NICs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pyVmomi import vim

from drivers.errors import NotFound, PermanentError
from drivers.recovery import UnresolvedVolume, VmHealth

T = TypeVar("T")


class RecoveryOps:
    """Needs the VSphere helpers below (provided by drivers.vsphere.VSphere)."""

    _call: Callable[..., Any]
    _datacenter: Callable[[], Any]
    _vm_obj: Callable[[str], Any]
    wait: Callable[..., Any]
    vc: Any

    def _hosts(self) -> list[Any]:
        return [h for cr in self._datacenter().hostFolder.childEntity for h in cr.host]

    def _datastore(self, name: str) -> Any | None:
        return next((d for d in self._datacenter().datastore if d.name == name), None)

    def placement_problems(self, datastore: str, host: str | None,
                           networks: list[str]) -> list[str]:
        """What a VM placed here would lack: the datastore, the host, a network."""
        def go() -> list[str]:
            dc = self._datacenter()
            out = []
            if datastore not in {d.name for d in dc.datastore}:
                out.append(f"no datastore '{datastore}'")
            hosts = {h.name for cr in dc.hostFolder.childEntity for h in getattr(cr, "host", [])}
            if host and host not in hosts:
                out.append(f"no host '{host}' (hosts: {', '.join(sorted(hosts))})")
            nets = {n.name for n in dc.network}
            out += [f"no network '{n}'" for n in dict.fromkeys(networks) if n not in nets]
            return out
        found: list[str] = self._call("check placement", go)
        return found

    def rescan_storage(self) -> None:
        def go() -> None:
            for h in self._hosts():
                h.configManager.storageSystem.RescanAllHba()
                h.configManager.storageSystem.RescanVmfs()
        self._call("rescan storage", go)

    def unresolved_volumes(self) -> list[UnresolvedVolume]:
        def go() -> list[UnresolvedVolume]:
            host = self._hosts()[0]
            vols = host.configManager.datastoreSystem.QueryUnresolvedVmfsVolumes() or []
            return [UnresolvedVolume(label=v.vmfsLabel, uuid=v.vmfsUuid,
                                     device_path=next(e.devicePath for e in v.extent
                                                      if e.isHeadExtent))
                    for v in vols]
        out: list[UnresolvedVolume] = self._call("query unresolved VMFS volumes", go)
        return out

    def _mounted(self, label: str) -> str | None:
        """The datastore of VMFS volume `label` here: its own name, or a resignatured copy."""
        for d in self._datacenter().datastore:
            if d.name == label or (d.name.startswith("snap-")
                                   and d.name.split("-", 2)[-1] == label):
                return str(d.name)
        return None

    def mounted_volume(self, label: str) -> str | None:
        found: str | None = self._call(f"find datastore of {label}", lambda: self._mounted(label))
        return found

    def mount_volume(self, label: str) -> str:
        def go() -> str:
            found = self._mounted(label)
            if found:
                return found
            vols = [v for v in self.unresolved_volumes() if v.label == label]
            if not vols:
                raise NotFound(f"no unresolved VMFS volume '{label}' on vCenter {self.vc.name}"
                               ": are its LUNs presented to the site's hosts?")
            dss = self._hosts()[0].configManager.datastoreSystem
            spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[vols[0].device_path])
            res = self.wait(dss.ResignatureUnresolvedVmfsVolume_Task(resolutionSpec=spec),
                            f"resignature {label}")
            return str(res.result.name)
        name: str = self._call(f"mount VMFS volume {label}", go)
        return name

    def register_vm(self, datastore: str, vm: str) -> str:
        path = f"[{datastore}] {vm}/{vm}.vmx"

        def go() -> str:
            dc = self._datacenter()
            for obj in dc.vmFolder.childEntity:
                if isinstance(obj, vim.VirtualMachine) and obj.config and \
                        obj.config.files.vmPathName == path:
                    return str(obj._moId)
            pool = next(cr.resourcePool for cr in dc.hostFolder.childEntity
                        if getattr(cr, "resourcePool", None) is not None)
            obj = self.wait(dc.vmFolder.RegisterVM_Task(path=path, name=vm, asTemplate=False,
                                                        pool=pool), f"register {vm}")
            return str(obj._moId)
        moref: str = self._call(f"register VM {vm} from {path}", go)
        return moref

    def remap_networks(self, vm: str, mapping: dict[str, str]) -> list[str]:
        def go() -> list[str]:
            obj = self._vm_obj(vm)
            nets = {n.name: n for n in self._datacenter().network}
            changes = []
            for d in obj.config.hardware.device:
                if not isinstance(d, vim.vm.device.VirtualEthernetCard):
                    continue
                old = getattr(d.backing, "deviceName", None)
                new = mapping.get(old or "")
                if new is None or new == old:
                    continue
                if new not in nets:
                    raise PermanentError(f"network '{new}' (mapped from '{old}') does not exist "
                                         f"on vCenter {self.vc.name}")
                d.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                    deviceName=new, network=nets[new])
                changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=d))
            if changes:
                self.wait(obj.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)),
                          f"re-map networks of {vm}")
            return _networks(self._vm_obj(vm))
        out: list[str] = self._call(f"re-map networks of {vm}", go)
        return out

    def vm_health(self, vm: str) -> VmHealth:
        def go() -> VmHealth:
            obj = self._vm_obj(vm)
            return VmHealth(name=vm, power_state=str(obj.runtime.powerState),
                            heartbeat=str(obj.guestHeartbeatStatus), networks=_networks(obj))
        out: VmHealth = self._call(f"check VM {vm}", go)
        return out

    def release_volume(self, label: str, vms: list[str]) -> list[str]:
        def go() -> list[str]:
            done = []
            for name in vms:
                try:
                    obj = self._vm_obj(name)
                except NotFound:
                    continue
                if str(obj.runtime.powerState) != "poweredOff":
                    self.wait(obj.PowerOffVM_Task(), f"power off {name}")
                    done.append(f"powered off {name}")
                obj.UnregisterVM()
                done.append(f"unregistered {name}")
            ds_name = self._mounted(label)
            ds = self._datastore(ds_name) if ds_name else None
            if ds is not None:
                self.wait(ds.Destroy_Task(), f"remove datastore {ds_name}")
                done.append(f"removed datastore {ds_name}")
            return done
        out: list[str] = self._call(f"release VMFS volume {label}", go)
        return out


def _networks(obj: Any) -> list[str]:
    return [str(getattr(d.backing, "deviceName", "")) for d in obj.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)]

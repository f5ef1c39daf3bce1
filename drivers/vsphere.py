"""The real vSphere adapter (pyVmomi): a vCenter or a standalone ESX host.

Around it: drivers/vsphere_session.py (the login, its renewal when vCenter ends the
session, the three timeouts, the translation of errors), drivers/vsphere_hunt.py (what a
call whose answer was lost did on vCenter), drivers/vsphere_datastore.py (disk bytes over
the datastore HTTP interface, the proxy's "vLUN mount") and drivers/retry.py (retry and
resume of those reads, as a wrapper).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast
from urllib.parse import quote

import requests
from pyVmomi import vim, vmodl

from drivers.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import (
    CbtUnusable,
    DiskInfo,
    RawDisk,
    SnapshotRef,
    TaskDeadlineExceeded,
    VmInfo,
)
from drivers.retry import RetryingReader
from drivers.vsphere_datastore import DatastoreDisk
from drivers.vsphere_hunt import CREATE_VM_TASK, Hunter, answer_lost, snapshot_tree
from drivers.vsphere_recovery import RecoveryOps
from drivers.vsphere_session import VcConnection, session_cookies, translate

__all__ = ["DatastoreDisk", "VSphere", "translate"]

T = TypeVar("T")
log = logging.getLogger("dpflow.drivers.vsphere")


def nic_changes(dc: Any, networks: list[str]) -> list[Any]:
    """Device specs adding one NIC per entry of `networks`, each on that network of `dc`."""
    nets = {n.name: n for n in dc.network}
    return [vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.VirtualE1000(
            key=-(100 + i), backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                deviceName=n, network=nets.get(n))))
        for i, n in enumerate(networks)]


class VSphere(RecoveryOps, Hunter, VcConnection):
    """The Hypervisor Protocol over one vCenter login (renewed when the session ends)."""

    def check(self) -> None:
        """The login works and the configured datacenter exists (user mistakes if not)."""
        super().check()
        self._datacenter()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return cast(T, self.call(what, fn))

    # --- inventory -------------------------------------------------------------
    def _datacenter(self) -> Any:
        for dc in self.si.content.rootFolder.childEntity:
            if isinstance(dc, vim.Datacenter) and dc.name == self.vc.datacenter:
                return dc
        raise UserError(f"vCenter {self.vc.name} has no datacenter '{self.vc.datacenter}'")

    def _every_vm(self, paths: list[str]) -> list[tuple[Any, dict[str, Any]]]:
        """Every VM with the given properties, in one inventory read (no call per VM)."""
        content = self.si.content
        view = content.viewManager.CreateContainerView(content.rootFolder,
                                                       [vim.VirtualMachine], True)
        pc = vmodl.query.PropertyCollector
        try:
            spec = pc.FilterSpec(
                objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                    name="v", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=paths)])
            return [(oc.obj, {p.name: p.val for p in oc.propSet or []})
                    for oc in content.propertyCollector.RetrieveContents([spec])]
        finally:
            view.Destroy()

    def _vm_obj(self, name: str) -> Any:
        for obj, props in self._every_vm(["name"]):
            if props.get("name") == name:
                return obj
        raise NotFound(f"unknown VM '{name}' on vCenter {self.vc.name}")

    def _vm_by_moref(self, moref: str) -> Any:
        return vim.VirtualMachine(moref, self.si._stub)

    @staticmethod
    def _disks_of(devices: Iterable[Any]) -> list[DiskInfo]:
        out = []
        for d in devices:
            if isinstance(d, vim.vm.device.VirtualDisk):
                fn = getattr(d.backing, "fileName", "")
                out.append(DiskInfo(key=d.key, label=d.deviceInfo.label if d.deviceInfo else "",
                                    capacity_bytes=d.capacityInBytes or d.capacityInKB * 1024,
                                    datastore=fn[1:fn.index("]")], file_name=fn,
                                    controller_key=d.controllerKey, unit_number=d.unitNumber,
                                    change_id=getattr(d.backing, "changeId", None) or None))
        return out

    def _vm_info(self, vm: Any) -> VmInfo:
        cfg = vm.config
        disks = self._disks_of(cfg.hardware.device)
        ds = disks[0].datastore if disks else vm.datastore[0].name
        return VmInfo(name=vm.name, moref=vm._moId, power_state=str(vm.runtime.powerState),
                      datastore=ds, num_cpu=cfg.hardware.numCPU, memory_mb=cfg.hardware.memoryMB,
                      guest_id=cfg.guestId or "otherGuest", disks=disks,
                      annotation=cfg.annotation or "",
                      host=vm.runtime.host.name if vm.runtime.host else "",
                      networks=[str(getattr(d.backing, "deviceName", "")) for d in
                                cfg.hardware.device
                                if isinstance(d, vim.vm.device.VirtualEthernetCard)])

    def find_vm(self, name: str) -> VmInfo:
        return self._call(f"find VM {name}", lambda: self._vm_info(self._vm_obj(name)))

    def raw_disks(self, vm: VmInfo) -> list[RawDisk]:
        """RDM disks of `vm` and the LUN each maps (its naa. WWN in the device name)."""
        def go() -> list[RawDisk]:
            out = []
            for d in self._vm_by_moref(vm.moref).config.hardware.device:
                b = getattr(d, "backing", None)
                if isinstance(d, vim.vm.device.VirtualDisk) and isinstance(
                        b, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
                    dev = b.deviceName or ""
                    out.append(RawDisk(key=d.key, label=d.deviceInfo.label if d.deviceInfo
                                       else "", device_name=dev, lun_uuid=b.lunUuid or "",
                                       compatibility_mode=b.compatibilityMode or "",
                                       wwn=dev.rpartition("naa.")[2].lower() if "naa." in dev
                                       else ""))
            return out
        return self._call(f"read RDM disks of {vm.name}", go)

    def vm_exists(self, name: str) -> bool:
        try:
            self.find_vm(name)
            return True
        except NotFound:
            return False

    def datastore_free_bytes(self, datastore: str) -> int:
        def go() -> int:
            for ds in self._datacenter().datastore:
                if ds.name == datastore:
                    ds.RefreshDatastore()
                    return int(ds.summary.freeSpace)
            raise NotFound(f"unknown datastore '{datastore}'")
        return self._call(f"free space of {datastore}", go)

    # --- change block tracking -------------------------------------------------
    def enable_change_tracking(self, vm: VmInfo) -> bool:
        def go() -> bool:
            obj = self._vm_by_moref(vm.moref)
            if obj.config.changeTrackingEnabled:
                return False
            self.wait(obj.ReconfigVM_Task(
                spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)), "enable CBT")
            return True
        return self._call(f"enable change tracking on {vm.name}", go)

    def changed_areas(self, snap: SnapshotRef, disk: DiskInfo,
                      since_change_id: str) -> list[tuple[int, int]]:
        """Page QueryChangedDiskAreas to the disk's end, checking every page.

        Bareos shipped silently incomplete incrementals by stopping after the first page;
        here the pages must tile the disk exactly and every area must lie inside it.
        """
        size = disk.capacity_bytes
        areas: list[tuple[int, int]] = []
        offset = 0
        while offset < size:
            try:
                # objects bound inside the call: after a re-login they use the new session
                info = self._call(f"changed areas of {disk.file_name}", lambda o=offset:  # type: ignore[misc]
                                  self._vm_by_moref(snap.vm_moref).QueryChangedDiskAreas(
                                      snapshot=vim.vm.Snapshot(snap.moref, self.si._stub),
                                      deviceKey=disk.key, startOffset=o,
                                      changeId=since_change_id))
            except PermanentError as exc:
                raise CbtUnusable(str(exc)) from exc
            start, length = int(info.startOffset), int(info.length)
            if start != offset or length <= 0 or start + length > size:
                raise CbtUnusable(f"CBT page [{start}, +{length}) does not continue the disk "
                                  f"at {offset} (size {size})")
            for a in info.changedArea or []:
                a0, an = int(a.start), int(a.length)
                if an <= 0 or a0 < start or a0 + an > start + length:
                    raise CbtUnusable(f"CBT area [{a0}, +{an}) lies outside its page "
                                      f"[{start}, +{length})")
                if areas and a0 < areas[-1][0] + areas[-1][1]:
                    raise CbtUnusable(f"CBT areas overlap or are out of order at {a0}")
                areas.append((a0, an))
            offset = start + length
        return areas

    # --- snapshots -------------------------------------------------------------
    def create_snapshot(self, vm: VmInfo, name: str, quiesce: bool) -> SnapshotRef:
        """Idempotent by name: an earlier attempt's snapshot `name` is adopted, not doubled
        (drivers/vsphere_hunt.py); a call whose answer was lost is hunted for first."""
        found = self.adopt_snapshot(vm, name, quiesce)
        if found is not None:
            return found

        def go() -> SnapshotRef:
            obj = self._vm_by_moref(vm.moref)
            task = obj.CreateSnapshot_Task(name=name, description="dpflow backup",
                                           memory=False, quiesce=quiesce)
            snap = self.wait(task, "create snapshot")
            return SnapshotRef(moref=snap._moId, name=name, vm_moref=vm.moref, quiesced=quiesce)
        try:
            return self._call(f"snapshot of VM {vm.name}", go)
        except TaskDeadlineExceeded:
            raise  # the task is known: the next attempt waits for it (adopt_snapshot)
        except TransientError as exc:
            if not answer_lost(exc):
                raise
            found = self.hunt(lambda: self.adopt_snapshot(vm, name, quiesce),
                              f"snapshot {name} of VM {vm.name}")
            if found is None:
                raise
            return found

    def list_snapshots(self, vm: VmInfo) -> list[SnapshotRef]:
        """Children before their parents (so they can be removed in that order)."""
        return self._call(f"snapshots of VM {vm.name}", lambda: [
            s for _, s in sorted(snapshot_tree(vm.moref, self._vm_by_moref(vm.moref).snapshot),
                                 key=lambda p: -p[0])])

    def snapshots_named(self, prefix: str) -> list[SnapshotRef]:
        """Every snapshot of every VM whose name starts with `prefix` (one inventory read),
        children before their parents (so they can be removed in that order)."""
        def go() -> list[SnapshotRef]:
            out = []
            for obj, props in self._every_vm(["name", "snapshot"]):
                tree = sorted(snapshot_tree(obj._moId, props.get("snapshot")),
                              key=lambda p: -p[0])  # children before their parents
                out += [s.model_copy(update={"vm_name": props.get("name", "")})
                        for _, s in tree if s.name.startswith(prefix)]
            return out
        return self._call(f"snapshots named {prefix}*", go)

    def vms_marked(self, prefix: str) -> list[VmInfo]:
        """VMs whose notes start with `prefix`: name, moref, power state and notes only."""
        def go() -> list[VmInfo]:
            return [VmInfo(name=p.get("name", ""), moref=obj._moId, datastore="",
                           power_state=str(p.get("runtime.powerState", "")),
                           annotation=p.get("config.annotation") or "")
                    for obj, p in self._every_vm(["name", "config.annotation",
                                                  "runtime.powerState"])
                    if (p.get("config.annotation") or "").startswith(prefix)]
        return self._call(f"VMs marked {prefix}*", go)

    def remove_snapshot(self, snap: SnapshotRef) -> None:
        def go() -> None:
            obj = vim.vm.Snapshot(snap.moref, self.si._stub)
            self.wait(obj.RemoveSnapshot_Task(removeChildren=False, consolidate=True),
                       "remove snapshot")
        try:
            self._call(f"remove snapshot {snap.name}", go)
        except PermanentError as exc:
            if "ManagedObjectNotFound" in str(exc):
                return  # already gone: removal is idempotent
            raise

    def snapshot_disks(self, snap: SnapshotRef) -> list[DiskInfo]:
        def go() -> list[DiskInfo]:
            obj = vim.vm.Snapshot(snap.moref, self.si._stub)
            return self._disks_of(obj.config.hardware.device)
        return self._call(f"disks of snapshot {snap.name}", go)

    # --- disk bytes over the datastore HTTP interface --------------------------
    def _disk_url(self, disk: DiskInfo) -> str:
        path = disk.file_name.split("] ", 1)[1]
        if path.endswith(".vmdk") and not path.endswith("-flat.vmdk"):
            path = path[:-5] + "-flat.vmdk"
        return (f"https://{self.vc.host}:{self.vc.port}/folder/{quote(path)}"
                f"?dcPath={quote(self.vc.datacenter)}&dsName={quote(disk.datastore)}")

    def _cookies(self) -> dict[str, str]:
        return session_cookies(self.si)

    def _verify(self) -> str | bool:
        return str(self.vc.ca_file) if self.vc.ca_file else True

    def open_disk(self, disk: DiskInfo) -> RetryingReader:
        return RetryingReader(DatastoreDisk(self._disk_url(disk), disk.capacity_bytes,
                                            self._cookies(), self._verify(),
                                            renew=self.renew_cookies))

    def write_disk(self, disk: DiskInfo, blocks: Iterable[bytes]) -> None:
        url = self._disk_url(disk)
        # a session that ended while idle is renewed here, before a body that cannot be
        # sent twice starts to flow
        self.check()
        cookies = self._cookies()
        try:
            r = requests.put(url, data=iter(blocks), cookies=cookies,
                             verify=self._verify(), timeout=(10, 300),
                             headers={"Content-Type": "application/octet-stream"})
        except (requests.RequestException, OSError) as exc:
            raise translate(exc, f"write disk {disk.file_name}") from exc
        if r.status_code == 401:
            self.renew_cookies(cookies)
            raise TransientError(f"write disk {disk.file_name}: the vCenter session ended "
                                 f"during the upload (HTTP 401); logged in again, write again")
        if r.status_code >= 500:
            raise TransientError(f"write disk {disk.file_name}: HTTP {r.status_code}")
        if r.status_code >= 300:
            raise PermanentError(
                f"write disk {disk.file_name}: HTTP {r.status_code} {r.text[:200]}")

    # --- VMs -------------------------------------------------------------------
    def _adopt_vm(self, name: str, marker: str) -> VmInfo | None:
        """The VM `name` an earlier attempt with the same marker made, once its task ended."""
        self._settle(self._call("VM folder", lambda: self._datacenter().vmFolder._moId),
                     CREATE_VM_TASK, f"create VM {name}")
        try:
            vm = self.find_vm(name)
        except NotFound:
            return None
        if vm.annotation != marker:
            return None
        log.warning("create VM %s: adopting %s, made by an earlier attempt", name, vm.moref)
        return vm

    def create_vm(self, spec: VmInfo, name: str, marker: str = "", network: str | None = None,
                  host: str | None = None) -> VmInfo:
        """With a marker, idempotent: a VM `name` carrying it (an earlier attempt's) is
        returned instead of a second one, and a call whose answer was lost is hunted for."""
        if marker:
            found = self._adopt_vm(name, marker)
            if found is not None:
                return found
        try:
            return self._create_vm(spec, name, marker, network, host)
        except TaskDeadlineExceeded:
            raise
        except PermanentError as exc:
            # the name is taken: by an earlier attempt of ours that ended meanwhile?
            adopted = (self._adopt_vm(name, marker)
                       if marker and isinstance(exc.__cause__, vim.fault.DuplicateName)
                       else None)
            if adopted is None:
                raise
            return adopted
        except TransientError as exc:
            if not marker or not answer_lost(exc):
                raise
            adopted = self.hunt(lambda: self._adopt_vm(name, marker), f"create VM {name}")
            if adopted is None:
                raise
            return adopted

    def _create_vm(self, spec: VmInfo, name: str, marker: str, network: str | None,
                   host: str | None) -> VmInfo:
        def go() -> VmInfo:
            dc = self._datacenter()
            pool = _first_resource_pool(dc)
            place = _host_named(dc, host) if host else None
            dev_changes = [vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.VirtualLsiLogicController(
                    key=1000, busNumber=0, sharedBus="noSharing"))]
            for i, d in enumerate(spec.disks):
                unit = i if i < 7 else i + 1  # unit 7 is the controller's own
                disk = vim.vm.device.VirtualDisk(
                    key=-(i + 1), controllerKey=1000, unitNumber=unit,
                    capacityInKB=(d.capacity_bytes + 1023) // 1024,
                    capacityInBytes=d.capacity_bytes,
                    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                        fileName=f"[{spec.datastore}]", diskMode="persistent",
                        thinProvisioned=True))
                dev_changes.append(vim.vm.device.VirtualDeviceSpec(
                    operation="add", fileOperation="create", device=disk))
            if network:
                dev_changes.append(vim.vm.device.VirtualDeviceSpec(
                    operation="add", device=vim.vm.device.VirtualVmxnet3(
                        key=-100, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                            deviceName=network), connectable=vim.vm.device.VirtualDevice
                        .ConnectInfo(startConnected=True, connected=True))))
            else:  # the VM's own NICs, on the networks the spec names
                dev_changes += nic_changes(dc, spec.networks)
            cfg = vim.vm.ConfigSpec(name=name, numCPUs=spec.num_cpu, memoryMB=spec.memory_mb,
                                    guestId=spec.guest_id, deviceChange=dev_changes,
                                    annotation=marker or None,
                                    files=vim.vm.FileInfo(vmPathName=f"[{spec.datastore}]"))
            vm = self.wait(dc.vmFolder.CreateVM_Task(config=cfg, pool=pool, host=place),
                           "create VM")
            return self._vm_info(vm)
        return self._call(f"create VM {name}", go)

    def _power(self, vm: VmInfo, want: str, start: Callable[[Any], Any], what: str) -> None:
        def go() -> None:
            obj = self._vm_by_moref(vm.moref)
            if str(obj.runtime.powerState) != want:
                self.wait(start(obj), what)
        self._call(f"{what} {vm.name}", go)

    def power_on(self, vm: VmInfo) -> None:
        self._power(vm, "poweredOn", lambda o: o.PowerOnVM_Task(), "power on")

    def power_off(self, vm: VmInfo) -> None:
        self._power(vm, "poweredOff", lambda o: o.PowerOffVM_Task(), "power off")

    def destroy_vm(self, vm: VmInfo) -> None:
        def go() -> None:
            obj = self._vm_by_moref(vm.moref)
            if str(obj.runtime.powerState) == "poweredOn":
                self.wait(obj.PowerOffVM_Task(), "power off")
            self.wait(obj.Destroy_Task(), "destroy")
        try:
            self._call(f"destroy VM {vm.name}", go)
        except PermanentError as exc:
            if "ManagedObjectNotFound" in str(exc):
                return  # already gone: destruction is idempotent
            raise


def _first_resource_pool(dc: Any) -> Any:
    for entity in dc.hostFolder.childEntity:
        pool = getattr(entity, "resourcePool", None)
        if pool is not None:
            return pool
    raise PermanentError(f"datacenter {dc.name} has no compute resource to place a VM")


def _host_named(dc: Any, name: str) -> Any:
    for entity in dc.hostFolder.childEntity:
        for h in getattr(entity, "host", []) or []:
            if h.name == name:
                return h
    raise NotFound(f"no ESX host '{name}' in datacenter {dc.name}")

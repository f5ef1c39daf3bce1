"""An isolated lab on a vCenter (pyVmomi): where a restore test boots a version.

A restored VM under test must never reach production: its one NIC sits on a port group
of a standard vSwitch without uplinks (no physical NIC, no bridge), on one ESX host,
so it can talk to nothing outside that host. The port group is created if missing; an
existing one with uplinks is refused (UserError), never used. The guest's heartbeat is
read from the VM (guestHeartbeatStatus and the tools' running status), as vSphere
reports it. Errors are translated as in drivers/vsphere.py.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from drivers.errors import PermanentError, UserError
from drivers.protocols import VmInfo


class IsolatedLab:
    """Lab operations over a logged-in drivers.vsphere.VSphere."""

    def __init__(self, hv: Any) -> None:
        self.hv = hv

    def _host(self, name: str | None) -> Any:
        dc = self.hv._datacenter()
        for entity in dc.hostFolder.childEntity:
            if getattr(entity, "resourcePool", None) is None:
                continue
            for h in getattr(entity, "host", []) or []:
                if name is None or h.name == name:
                    return h
        raise UserError(f"no ESX host {name or ''} for the isolated lab in datacenter "
                        f"{dc.name}: check restore_tests.host in the config")

    def host_name(self, name: str | None = None) -> str:
        """The lab's ESX host: the one named, else the first of the first cluster."""
        return str(self.hv._call("lab host", lambda: self._host(name).name))

    def ensure_network(self, host: str, network: str, switch: str) -> bool:
        """The port group `network` on a vSwitch without uplinks on `host`; True when it was
        created now. One with uplinks is refused: it is not isolated."""
        def go() -> bool:
            ns = self._host(host).configManager.networkSystem
            info = ns.networkInfo
            switches = {s.name: s for s in info.vswitch or []}
            for pg in info.portgroup or []:
                if pg.spec.name == network:
                    sw = switches.get(pg.spec.vswitchName)
                    if sw is None or _uplinks(sw):
                        raise UserError(
                            f"port group {network} on host {host} is not isolated: its vSwitch "
                            f"{pg.spec.vswitchName} has uplinks {_uplinks(sw)}; name another "
                            f"restore_tests.network")
                    return False
            if switch not in switches:
                ns.AddVirtualSwitch(vswitchName=switch,
                                    spec=vim.host.VirtualSwitch.Specification(numPorts=64))
            elif _uplinks(switches[switch]):
                raise UserError(f"vSwitch {switch} on host {host} has uplinks "
                                f"{_uplinks(switches[switch])}: it cannot hold the isolated "
                                f"lab; name another restore_tests.switch")
            ns.AddPortGroup(portgrp=vim.host.PortGroup.Specification(
                name=network, vlanId=0, vswitchName=switch, policy=vim.host.NetworkPolicy()))
            return True
        return bool(self.hv._call(f"isolated network {network} on {host}", go))

    def networks(self, vm: VmInfo) -> list[str]:
        """The network name of each NIC of the VM."""
        def go() -> list[str]:
            obj = self.hv._vm_by_moref(vm.moref)
            out = []
            for d in obj.config.hardware.device:
                if isinstance(d, vim.vm.device.VirtualEthernetCard):
                    out.append(str(getattr(d.backing, "deviceName", "") or "?"))
            return out
        return list(self.hv._call(f"NICs of {vm.name}", go))

    def heartbeat(self, vm: VmInfo) -> tuple[str, str]:
        """(guestHeartbeatStatus, guest.toolsRunningStatus) as vSphere reports them now."""
        def go() -> tuple[str, str]:
            obj = self.hv._vm_by_moref(vm.moref)
            if str(obj.runtime.powerState) != "poweredOn":
                raise PermanentError(f"VM {vm.name} is {obj.runtime.powerState}")
            guest = obj.guest
            return (str(obj.guestHeartbeatStatus or "gray"),
                    str(getattr(guest, "toolsRunningStatus", "") or ""))
        result: tuple[str, str] = self.hv._call(f"heartbeat of {vm.name}", go)
        return result


def _uplinks(sw: Any) -> list[str]:
    if sw is None:
        return []
    pnics = [str(p) for p in (sw.pnic or [])]
    bridge = getattr(sw.spec, "bridge", None) if sw.spec else None
    return pnics + (["bridge"] if bridge is not None else [])

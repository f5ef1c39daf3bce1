"""The SMI-S face of Continuous Access: remote replication as the standard models it.

Why these classes: SMI-S Replication Services puts a remote pair in a
CIM_RemoteReplicationCollection between two systems; a DR group is a group replica
(CIM_GroupSynchronized, SyncType 6 Mirror, Mode 2 sync / 3 async) between a
CIM_ReplicationGroup on the source system and one on the destination, and each copy set
a CIM_StorageSynchronized between a local and a remote volume. Each array shows the
pair from its own side: SystemElement is always the current source, so a client reads
the direction from the paths and CopyState/SyncState before every operation. What the
standard has no property for (role, log, lag, failsafe) is in EVA_DRGroupSynchronized.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pywbem import CIMInstance, CIMInstanceName, CIMProperty, Uint16, Uint32, Uint64

from simulators.eva import cim_view as v
from simulators.eva.model import EvaArray
from simulators.eva.objects import Missing, Refusal

MOF = Path(__file__).with_name("eva_remote.mof")
DR_DESCRIPTION = "Continuous Access DR group"
MODE_CODES = {"sync": 2, "async": 3, "enhanced": 32768}
CODE_MODES = {c: m for m, c in MODE_CODES.items()}
# DR group state -> (CopyState, SyncState)
STATES = {"normal": (4, 6), "copying": (3, 15), "merging": (3, 5), "logging": (16, 12),
          "suspended": (9, 13), "failsafe-locked": (16, 14)}
OPERATIONS = {10: "failover", 11: "failback", 16: "resume", 20: "swap", 22: "suspend"}
DETACH = 8


def rrc_path(a: EvaArray, peer: str) -> CIMInstanceName:
    return v.path("CIM_RemoteReplicationCollection", InstanceID=f"{a.name}:RRC:{peer}")


def dr_group_path(system: str, name: str) -> CIMInstanceName:
    return v.path("CIM_ReplicationGroup", InstanceID=f"{system}:DR:{name}")


def remote_volume_path(system: str, device_id: str) -> CIMInstanceName:
    return v.path("CIM_StorageVolume", SystemCreationClassName=v.SYS_CLASS, SystemName=system,
                  CreationClassName="CIM_StorageVolume", DeviceID=device_id)


def dr_sync_path(a: EvaArray, name: str) -> CIMInstanceName:
    g = a.dr_groups[name]
    src, dst = (a.name, g.peer) if g.role == "source" else (g.peer, a.name)
    return v.path("EVA_DRGroupSynchronized", SystemElement=dr_group_path(src, name),
                  SyncedElement=dr_group_path(dst, name))


def dr_name(sync: CIMInstanceName) -> str | None:
    """The DR group a Synchronization reference names, or None if it is not a DR group."""
    synced = sync.keybindings.get("SyncedElement")
    iid = str(synced.keybindings.get("InstanceID", "")) if synced is not None else ""
    parts = iid.split(":", 2)
    return parts[2] if len(parts) == 3 and parts[1] == "DR" else None


def flag(value: object) -> bool:
    """A boolean parameter as CIM-XML or the faked connection delivers it."""
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _inst(p: CIMInstanceName, **props: object) -> CIMInstance:
    inst = CIMInstance(p.classname, properties=dict(p.keybindings), path=p)
    for k, val in props.items():
        inst[k] = val
    return inst


def build(a: EvaArray) -> Iterator[CIMInstance]:
    """Remote replication instances of the array as it is now (lock held)."""
    for peer, link in a.links.items():
        yield _inst(rrc_path(a, peer), ElementName=peer, RemoteSystemName=peer,
                    LinkUp=link.wire.up)
    for name, g in a.dr_groups.items():
        info = a.dr_info(name)
        gp = dr_group_path(a.name, name)
        yield _inst(gp, ElementName=name, Persistent=True)
        for i, (local, _) in enumerate(g.members):
            yield _inst(v.path("CIM_OrderedMemberOfCollection", Collection=gp,
                               Member=v.volume_path(a, a.vdisks[local])),
                        AssignedSequence=Uint64(i))
        copy_state, sync_state = STATES[info["state"]]
        mode = Uint16(MODE_CODES[g.mode])
        common = dict(SyncMaintained=True, CopyState=Uint16(copy_state),
                      SyncState=Uint16(sync_state), CopyType=Uint16(2 if g.mode == "sync" else 3),
                      SyncType=Uint16(6), Mode=mode,
                      PercentSynced=Uint16(100 if g.consistent and not g.pending else 50))
        for i, (local, _) in enumerate(g.members):
            here = v.volume_path(a, a.vdisks[local])
            there = remote_volume_path(g.peer, g.remote_ids[i] if i < len(g.remote_ids) else "")
            src, dst = (here, there) if g.role == "source" else (there, here)
            yield _inst(v.path("CIM_StorageSynchronized", SystemElement=src, SyncedElement=dst),
                        ElementName=f"{name}:{i}", Description=DR_DESCRIPTION, **common)
        since = info["since_failover_s"]
        yield _inst(dr_sync_path(a, name), ElementName=name, Description=DR_DESCRIPTION,
                    LocalRole=g.role, LocalSystem=a.name, RemoteSystem=g.peer,
                    HomeSystem=g.home, DrState=info["state"], Failsafe=g.failsafe,
                    Suspended=g.suspended, LogBytes=Uint64(info["log_bytes"]),
                    LogCapacity=Uint64(info["log_capacity"]),
                    LogWrites=Uint64(info["log_writes"]), LagMilliseconds=Uint64(
                        int(info["lag_s"] * 1000)), PendingBlocks=Uint64(info["pending_blocks"]),
                    WritesApplied=Uint64(max(0, info["seq"])),
                    Generation=Uint32(info["generation"]),
                    SecondsSinceFailover=CIMProperty(
                        "SecondsSinceFailover", None if since is None else max(0, int(since)),
                        type="uint64"),
                    LinkUp=g.link_up, FullCopies=Uint32(g.full_copies),
                    Members=[local for local, _ in g.members], **common)


class RemoteMethods:
    """Provider methods for DR groups, mixed into the EVA provider (`self.array`)."""

    array: EvaArray

    def create_dr_group(self, a: dict[str, Any], members: list[str]) -> Any:
        rrc = a["ConnectivityCollection"]
        peer = str(rrc.keybindings.get("InstanceID", "")).split(":RRC:", 1)[-1]
        if peer not in self.array.links:
            raise Missing(f"remote replication collection {rrc.keybindings} does not exist")
        if int(a.get("SyncType") or 0) != 6:
            raise Refusal(5, "Continuous Access replicates with SyncType 6 (Mirror) only")
        mode = CODE_MODES.get(int(a.get("Mode") or 2))
        if mode is None:
            raise Refusal(5, f"Mode {a.get('Mode')} is not supported (2 sync, 3 async, "
                             "32768 enhanced asynchronous)")
        name = a.get("RelationshipName") or self.array.next_id("DRG")
        pool = (self._tail(a["TargetPool"], "TargetPool")  # type: ignore[attr-defined]
                if a.get("TargetPool") else None)
        self.array.create_dr_group(name, members, peer, mode, flag(a.get("Failsafe")), pool)
        out = {"TargetGroup": dr_group_path(peer, name),
               "Synchronization": dr_sync_path(self.array, name)}
        return [("drgroup", name)], out

    def modify_dr_group(self, name: str, op_code: int) -> Any:
        if op_code == DETACH:
            self.array.delete_dr_group(name)
            return [], {}
        op = OPERATIONS.get(op_code)
        if op is None:
            raise Refusal(1, f"Operation {op_code} is not supported on a DR group")
        self.array.modify_dr_group(name, op)
        return [], {}

    def _EVA_ModifyDRGroup(self, a: dict[str, Any]) -> Any:  # noqa: N802
        sync = a.get("Synchronization")
        name = dr_name(sync) if sync is not None else None
        if name is None:
            raise Refusal(5, "Synchronization must name a DR group")
        mode = None
        if a.get("Mode") is not None:
            mode = CODE_MODES.get(int(a["Mode"]))
            if mode is None:
                raise Refusal(5, f"Mode {a['Mode']} is not supported")
        failsafe = None if a.get("Failsafe") is None else flag(a["Failsafe"])
        self.array.set_dr_mode(name, mode, failsafe)
        return [], {}

"""RemoteReplication over SMI-S: DR groups as remote group replicas (mixed into SmisArray).

Why read before every operation: ModifyReplicaSynchronization is not idempotent on an
array (a second Suspend is refused as "a state change to the same state"), and a flow
re-run after a crash must continue, not fail. So each operation reads the group's
CopyState/SyncState and role first and returns when there is nothing to do, as the VMAX
driver in Cinder does. A DR group is created from a transient source group
(CreateGroup → CreateGroupReplica with a ConnectivityCollection → DeleteGroup).
"""

from __future__ import annotations

from typing import Any

from pywbem import CIMInstanceName, Uint16

from drivers.errors import NotFound, UserError
from drivers.remote import DrGroupInfo, DrMember, DrMode, DrRole

DR_DESCRIPTION = "Continuous Access DR group"
MODE_CODES = {DrMode.SYNC: 2, DrMode.ASYNC: 3, DrMode.ENHANCED: 32768}
CODE_MODES = {c: m for m, c in MODE_CODES.items()}
OPS = {"failover": 10, "failback": 11, "resume": 16, "swap": 20, "suspend": 22, "detach": 8}


class SmisRemoteReplication:
    """DR group methods of `SmisArray` (needs its `_enum`, `_invoke` and `_volumes`)."""

    _enum: Any
    _invoke: Any
    _volumes: Any
    _pool_path: Any

    def list_remote_arrays(self) -> list[str]:
        return sorted(c["ElementName"] for c in self._enum("CIM_RemoteReplicationCollection"))

    def _rrc(self, remote: str) -> CIMInstanceName:
        for c in self._enum("CIM_RemoteReplicationCollection"):
            if c["ElementName"] == remote:
                return c.path
        raise NotFound(f"no remote replication link to an array named '{remote}' (the "
                       f"array knows {', '.join(self.list_remote_arrays()) or 'none'})")

    def _dr_syncs(self) -> dict[str, Any]:
        return {s["ElementName"]: s for s in self._enum("EVA_DRGroupSynchronized")
                if s["Description"] == DR_DESCRIPTION}

    def _dr_sync(self, name: str) -> Any:
        s = self._dr_syncs().get(name)
        if s is None:
            raise NotFound(f"no DR group named '{name}' on the array")
        return s

    def _info(self, s: Any) -> DrGroupInfo:
        members = list(s["Members"] or [])  # in order, as this array names them
        since = s["SecondsSinceFailover"]
        return DrGroupInfo(
            name=s["ElementName"], role=DrRole(s["LocalRole"]), local_array=s["LocalSystem"],
            remote_array=s["RemoteSystem"], home=s["HomeSystem"],
            mode=CODE_MODES.get(int(s["Mode"]), DrMode.ASYNC), failsafe=bool(s["Failsafe"]),
            suspended=bool(s["Suspended"]), state=s["DrState"],
            copy_state=int(s["CopyState"]), sync_state=int(s["SyncState"]),
            members=[DrMember(local=m, remote=m) for m in members],
            log_bytes=int(s["LogBytes"]), log_capacity=int(s["LogCapacity"]),
            log_writes=int(s["LogWrites"]), lag_ms=int(s["LagMilliseconds"]),
            pending_blocks=int(s["PendingBlocks"]), writes_applied=int(s["WritesApplied"]),
            generation=int(s["Generation"]), since_failover_s=None if since is None else
            int(since), link_up=bool(s["LinkUp"]), full_copies=int(s["FullCopies"]))

    def get_dr_group(self, name: str) -> DrGroupInfo:
        return self._info(self._dr_sync(name))

    def list_dr_groups(self) -> list[DrGroupInfo]:
        return [self._info(s) for s in self._dr_syncs().values()]

    def create_dr_group(self, name: str, vdisks: list[str], remote_array: str,
                        mode: DrMode = DrMode.SYNC, failsafe: bool = False,
                        remote_pool: str | None = None,
                        deadline_s: float = 300.0) -> DrGroupInfo:
        try:
            have = self.get_dr_group(name)
        except NotFound:
            have = None
        if have is not None:
            if [m.local for m in have.members] != list(vdisks) or \
                    have.remote_array != remote_array:
                raise UserError(f"a DR group named '{name}' already exists with other members "
                                f"or another remote array; pick another name")
            return have
        vols = self._volumes()
        missing = [v for v in vdisks if v not in vols]
        if missing:
            raise NotFound(f"no virtual disk named {', '.join(missing)} on the array")
        rrc = self._rrc(remote_array)
        out = self._invoke("CIM_ReplicationService", "CreateGroup", deadline_s,
                           GroupName=f"{name}.members", Persistent=False,
                           Members=[vols[v].path for v in vdisks])
        group = out["ReplicationGroup"]
        params: dict[str, Any] = {"SyncType": Uint16(6), "Mode": Uint16(MODE_CODES[DrMode(mode)]),
                                  "RelationshipName": name, "SourceGroup": group,
                                  "ConnectivityCollection": rrc, "Failsafe": bool(failsafe)}
        if remote_pool:
            params["TargetPool"] = CIMInstanceName(
                "CIM_StoragePool", keybindings={"InstanceID": f"{remote_array}:DG:{remote_pool}"},
                namespace=group.namespace)
        try:
            self._invoke("CIM_ReplicationService", "CreateGroupReplica", deadline_s, **params)
        finally:
            self._invoke("CIM_ReplicationService", "DeleteGroup", 60.0, ReplicationGroup=group,
                         RemoveElements=False)
        return self.get_dr_group(name)

    def _dr_op(self, name: str, op: str, deadline_s: float = 300.0) -> DrGroupInfo:
        self._invoke("CIM_ReplicationService", "ModifyReplicaSynchronization", deadline_s,
                     Operation=Uint16(OPS[op]), Synchronization=self._dr_sync(name).path)
        return self.get_dr_group(name)

    def set_dr_mode(self, name: str, mode: DrMode | None = None,
                    failsafe: bool | None = None) -> DrGroupInfo:
        g = self.get_dr_group(name)
        params: dict[str, Any] = {}
        if mode is not None and DrMode(mode) != g.mode:
            params["Mode"] = Uint16(MODE_CODES[DrMode(mode)])
        if failsafe is not None and failsafe != g.failsafe:
            params["Failsafe"] = failsafe
        if not params:
            return g
        self._invoke("CIM_ReplicationService", "EVA_ModifyDRGroup", 60.0,
                     Synchronization=self._dr_sync(name).path, **params)
        return self.get_dr_group(name)

    def suspend_dr_group(self, name: str) -> DrGroupInfo:
        g = self.get_dr_group(name)
        return g if g.suspended else self._dr_op(name, "suspend")

    def resume_dr_group(self, name: str) -> DrGroupInfo:
        g = self.get_dr_group(name)
        return self._dr_op(name, "resume") if g.suspended else g

    def failover_dr_group(self, name: str) -> DrGroupInfo:
        g = self.get_dr_group(name)
        if g.role == DrRole.SOURCE and g.home != g.local_array:
            return g  # this side already failed over
        return self._dr_op(name, "failover")

    def failback_dr_group(self, name: str) -> DrGroupInfo:
        g = self.get_dr_group(name)
        at_home = (g.role == DrRole.SOURCE) == (g.home == g.local_array)
        return g if at_home else self._dr_op(name, "failback")

    def swap_dr_group(self, name: str) -> DrGroupInfo:
        return self._dr_op(name, "swap")

    def delete_dr_group(self, name: str) -> None:
        try:
            self._dr_sync(name)
        except NotFound:
            return
        self._dr_op_detach(name)

    def _dr_op_detach(self, name: str) -> None:
        self._invoke("CIM_ReplicationService", "ModifyReplicaSynchronization", 60.0,
                     Operation=Uint16(OPS["detach"]), Synchronization=self._dr_sync(name).path)


"""The SMI-S face of the simulated EVA: pywbem_mock providers over `EvaArray`.

Why thin: each extrinsic method only decodes its parameters, applies run-time faults,
calls the model and encodes the answer (0, or 4096 with a ConcreteJob, by configuration).
Refusals come back as the SMI-S return code with the array's words in an extra
`ErrorDescription` output parameter; unknown objects as CIM_ERR_NOT_FOUND.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pywbem
from pywbem import CIMError, CIMInstanceName, Uint32
from pywbem_mock import FakedWBEMConnection, MethodProvider

from simulators.eva import cim_remote
from simulators.eva import cim_view as v
from simulators.eva.cim_remote import RemoteMethods
from simulators.eva.model import EvaArray
from simulators.eva.objects import Missing, Refusal

MOF = Path(__file__).with_name("eva.mof")
JOB_STARTED = 4096
OPERATIONS = {8: "detach", 12: "fracture", 14: "resync", 15: "restore", 19: "delete"}
SYNC_ONLY = {"creategroup", "deletegroup", "exposepaths", "hidepaths"}  # metadata: answer 0
SERVICES = ["CIM_StorageConfigurationService", "CIM_ControllerConfigurationService",
            "CIM_ReplicationService"]


class EvaProvider(MethodProvider, RemoteMethods):
    """Extrinsic methods of the three SMI-S services of one array."""

    provider_classnames = SERVICES

    def __init__(self, cimrepository: Any, array: EvaArray, hang_raises: bool) -> None:
        super().__init__(cimrepository)
        self.array = array
        self.hang_raises = hang_raises  # in-process: raise the client's timeout at once

    def InvokeMethod(self, methodname: str, localobject: Any, params: Any) -> Any:  # noqa: N802
        fault = self.array.faults.take(methodname)
        job_error = None
        if fault and fault.kind == "rc":
            return Uint32(int(fault.value)), {"ErrorDescription": fault.description}
        if fault and fault.kind == "timeout":
            if self.hang_raises:
                raise pywbem.TimeoutError(f"{methodname}: provider did not answer in time")
            time.sleep(fault.value)
        if fault and fault.kind == "job":
            job_error = (int(fault.value), fault.description)
        handler = getattr(self, f"_{methodname}", None)
        if handler is None:
            raise CIMError(pywbem.CIM_ERR_METHOD_NOT_AVAILABLE, methodname)
        args = {name: p.value for name, p in params.items()}
        try:
            if job_error:  # the job fails: nothing is applied, the job says why
                return self._job(methodname, [], {}, job_error)
            affected, out = handler(args)
        except Missing as e:
            raise CIMError(pywbem.CIM_ERR_NOT_FOUND, e.words) from None
        except Refusal as e:
            return Uint32(e.rc), {"ErrorDescription": e.words}
        if self.array.job_mode and methodname.lower() not in SYNC_ONLY:
            return self._job(methodname, affected, out, None)
        return Uint32(0), out

    def _job(self, method: str, affected: list[tuple[str, str]], out: dict[str, Any],
             error: tuple[int, str] | None) -> Any:
        job = self.array.start_job(method, affected, error)
        return Uint32(JOB_STARTED), dict(out, Job=v.job_path(job.id))

    # ---- reference decoding -------------------------------------------------------
    def _vdisk(self, ref: CIMInstanceName | None, what: str = "element") -> str:
        if ref is None:
            raise Refusal(5, f"missing {what}")
        dev = ref.keybindings.get("DeviceID")
        for vd in self.array.vdisks.values():
            if vd.id == dev:
                return vd.name
        raise Missing(f"virtual disk {dev} does not exist")

    def _by_wwn(self, wwn: str) -> str:
        for host, wwns in self.array.hosts.items():
            if wwn.upper() in wwns:
                return host
        raise Refusal(4098, f"initiator {wwn} is not known to the array")

    def _lu(self, lu: str) -> str:
        for vd in self.array.vdisks.values():
            if vd.id == lu or vd.name == lu:
                return vd.name
        raise Refusal(4097, f"logical unit {lu} does not exist")

    @staticmethod
    def _tail(ref: CIMInstanceName | None, what: str) -> str:
        if ref is None:
            raise Refusal(5, f"missing {what}")
        return str(ref.keybindings["InstanceID"]).split(":", 2)[2]

    def _kind(self, sync_type: int | None, goal: CIMInstanceName | None) -> str:
        kind = v.SYNC_TYPE_KINDS.get(int(sync_type or 0))
        if kind is None:
            raise Refusal(5, f"SyncType {sync_type} is not supported by this array")
        if kind == "vsnap" and goal is not None:
            kind = self._tail(goal, "Goal")
        return kind

    # ---- StorageConfigurationService ---------------------------------------------------
    def _CreateOrModifyElementFromStoragePool(self, a: dict[str, Any]) -> Any:  # noqa: N802
        if a.get("TheElement") is not None:
            raise Refusal(1, "modifying an existing virtual disk is not supported")
        if int(a.get("ElementType") or 2) not in (2, 5):
            raise Refusal(5, f"ElementType {a.get('ElementType')} is not supported")
        if a.get("Size") is None:
            raise Refusal(5, "Size is required")
        name = a.get("ElementName") or self.array.next_id("Vdisk")
        vd = self.array.create_vdisk(name, int(a["Size"]), self._tail(a.get("InPool"), "InPool"))
        out = {"TheElement": v.volume_path(self.array, vd), "Size": pywbem.Uint64(vd.size)}
        return [("vdisk", vd.name)], out

    def _ReturnToStoragePool(self, a: dict[str, Any]) -> Any:  # noqa: N802
        self.array.delete_vdisk(self._vdisk(a.get("TheElement")))
        return [], {}

    # ---- ControllerConfigurationService ---------------------------------------------------
    def _paths(self, a: dict[str, Any]) -> tuple[list[str], list[str]]:
        lus = [self._lu(x) for x in a.get("LUNames") or []]
        hosts = sorted({self._by_wwn(x) for x in a.get("InitiatorPortIDs") or []})
        if not lus or not hosts:
            raise Refusal(5, "LUNames and InitiatorPortIDs are required")
        return lus, hosts

    def _ExposePaths(self, a: dict[str, Any]) -> Any:  # noqa: N802
        lus, hosts = self._paths(a)
        numbers = a.get("DeviceNumbers") or [None] * len(lus)
        access = a.get("DeviceAccesses") or [2] * len(lus)
        with self.array.lock:
            for host in hosts:
                for lu, num, acc in zip(lus, numbers, access, strict=False):
                    self.array.present(lu, host, None if num is None else int(num),
                                       read_only=int(acc) == 3)
        out = {"ProtocolControllers": [v.spc_path(self.array, h) for h in hosts]}
        return [], out

    def _HidePaths(self, a: dict[str, Any]) -> Any:  # noqa: N802
        lus, hosts = self._paths(a)
        with self.array.lock:
            for host in hosts:
                for lu in lus:
                    self.array.unpresent(lu, host)
        return [], {}

    # ---- ReplicationService ------------------------------------------------------------
    def _CreateElementReplica(self, a: dict[str, Any]) -> Any:  # noqa: N802
        src = self._vdisk(a.get("SourceElement"), "SourceElement")
        kind = self._kind(a.get("SyncType"), a.get("Goal"))
        name = a.get("ElementName") or self.array.next_id("BC")
        pool = self._tail(a["TargetPool"], "TargetPool") if a.get("TargetPool") else None
        rs = self.array.create_replica_set(name, [src], kind, pool)
        p = self.array.pairs[rs.pairs[0]]
        out = {"TargetElement": v.volume_path(self.array, self.array.vdisks[p.target]),
               "Synchronization": v.sync_path(self.array, p)}
        return [("vdisk", p.target)], out

    def _CreateGroup(self, a: dict[str, Any]) -> Any:  # noqa: N802
        members = [self._vdisk(m, "Members") for m in a.get("Members") or []]
        name = a.get("GroupName") or self.array.next_id("Group")
        self.array.create_group(name, members)
        return [("group", name)], {"ReplicationGroup": v.group_path(self.array, name, False)}

    def _DeleteGroup(self, a: dict[str, Any]) -> Any:  # noqa: N802
        self.array.delete_group(self._tail(a.get("ReplicationGroup"), "ReplicationGroup"))
        return [], {}

    def _CreateGroupReplica(self, a: dict[str, Any]) -> Any:  # noqa: N802
        group = self._tail(a.get("SourceGroup"), "SourceGroup")
        if group not in self.array.groups:
            raise Missing(f"group '{group}' does not exist")
        if a.get("ConnectivityCollection") is not None:  # remote: a Continuous Access DR group
            return self.create_dr_group(a, self.array.groups[group])
        if a.get("Consistency") is not None and int(a["Consistency"]) == 2:
            raise Refusal(5, "this array only makes consistent group replicas")
        kind = self._kind(a.get("SyncType"), a.get("Goal"))
        name = a.get("RelationshipName") or self.array.next_id("BC")
        pool = self._tail(a["TargetPool"], "TargetPool") if a.get("TargetPool") else None
        rs = self.array.create_replica_set(name, self.array.groups[group], kind, pool)
        rs.source_group = group
        self.array.save()
        out = {"TargetGroup": v.group_path(self.array, name, True),
               "Synchronization": v.group_sync_path(self.array, name)}
        return [("set", name)], out

    def _ModifyReplicaSynchronization(self, a: dict[str, Any]) -> Any:  # noqa: N802
        sync = a.get("Synchronization")
        if sync is None:
            raise Refusal(5, "Synchronization is required")
        if (dr := cim_remote.dr_name(sync)) is not None:
            return self.modify_dr_group(dr, int(a.get("Operation") or 0))
        op = OPERATIONS.get(int(a.get("Operation") or 0))
        if op is None:
            raise Refusal(1, f"Operation {a.get('Operation')} is not supported")
        synced = sync.keybindings["SyncedElement"]
        if sync.classname.lower() == "cim_groupsynchronized":
            target = self._tail(synced, "SyncedElement")
        else:
            name = self._vdisk(synced, "SyncedElement")
            target = next((p.id for p in self.array.pairs.values() if p.target == name), "")
        self.array.modify(target, op)
        return [], {}


class EvaConnection(FakedWBEMConnection):
    """A faked connection whose repository is re-read from the model at every call."""

    def __init__(self, array: EvaArray, hang_raises: bool = True) -> None:
        super().__init__(default_namespace=v.NS)
        self.array = array
        self.compile_mof_file(str(MOF), namespace=v.NS)
        self.compile_mof_file(str(cim_remote.MOF), namespace=v.NS)
        self.register_provider(EvaProvider(self.cimrepository, array, hang_raises),
                               namespaces=[v.NS])

    def sync(self) -> None:
        store = self.cimrepository.get_instance_store(v.NS)
        with self.array.lock:
            for name in list(store.iter_names()):
                store.delete(name)
            for inst in itertools.chain(v.build(self.array), cim_remote.build(self.array)):
                store.create(inst.path, inst)

    def _mock_imethodcall(self, methodname, namespace, response_params_rqd=None,  # type: ignore[override]
                          **params):
        self.sync()
        return super()._mock_imethodcall(methodname, namespace, response_params_rqd, **params)

    def _mock_methodcall(self, methodname, objectname, Params=None, **params):  # type: ignore[override]  # noqa: N803
        self.sync()
        return super()._mock_methodcall(methodname, objectname, Params, **params)


def faked_connection(array: EvaArray) -> EvaConnection:
    """An in-process pywbem connection to `array` (for fast unit tests)."""
    return EvaConnection(array)

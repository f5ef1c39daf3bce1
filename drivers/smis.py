"""ArrayDriver over SMI-S with pywbem: an EVA (or any Replication Services provider).

Why it takes a connection object: production passes a `pywbem.WBEMConnection` (HTTPS,
certificate verified), unit tests the simulator's faked connection; the code path is the
same. pywbem errors and SMI-S return codes are translated here, once, into
dpflow.errors, keeping the array's words (httpx's boundary rule).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pywbem
from pywbem import CIMInstanceName, Uint16, Uint64

from drivers.endpoints import ArrayEndpoint
from drivers.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import (
    OutOfSpace,
    PoolInfo,
    Presentation,
    Replica,
    ReplicaKind,
    ReplicaSet,
    ReplicaState,
    VDiskInfo,
)
from drivers.smis_remote import DR_DESCRIPTION, SmisRemoteReplication

RC_WORDS = {1: "Not Supported", 2: "Unknown", 3: "Timeout", 4: "Failed",
            5: "Invalid Parameter", 6: "In Use", 4097: "Invalid logical unit / size",
            4098: "Invalid initiator", 4099: "Invalid target", 4103: "Already exposed"}
JOB_DONE = {7: "Completed", 8: "Terminated", 9: "Killed", 10: "Exception"}
SYNC_TYPE = {ReplicaKind.SNAPSHOT: 7, ReplicaKind.VSNAP: 7, ReplicaKind.SNAPCLONE: 8,
             ReplicaKind.MIRRORCLONE: 6}
NO_SPACE = re.compile(r"(insufficient|not enough|no) (free )?(space|capacity)", re.I)
OP = {"detach": 8, "fracture": 12, "resync": 14, "restore": 15, "delete": 19}


def connect(url: str, user: str, password: str, ca_file: str | None = None,
            namespace: str = "root/eva", timeout: float = 30.0) -> pywbem.WBEMConnection:
    """A WBEMConnection that verifies the array's certificate against `ca_file`.

    Why trust_env is turned off: requests lets REQUESTS_CA_BUNDLE (set on many hosts)
    override the session's CA per request, so the provider's own CA would be ignored.
    """
    conn = pywbem.WBEMConnection(url, (user, password), default_namespace=namespace,
                                 ca_certs=ca_file, timeout=timeout)
    conn.session.trust_env = False
    return conn


def open_array(array: ArrayEndpoint, password: str) -> SmisArray:
    """The DRIVERS factory: a configured array (any ArrayEndpoint) over a verified
    WBEMConnection. Nothing is sent until the first call (`check()` proves the login)."""
    conn = connect(array.url, array.user, password,
                   str(array.ca_file) if array.ca_file else None, array.namespace,
                   array.timeout_s)
    return SmisArray(conn)


class JobStillRunning(TransientError):
    """The deadline passed but the array's job goes on: its effect may still appear."""


def rc_error(method: str, rc: int, words: str | None) -> Exception:
    """The dpflow error for an SMI-S return code (words: what the array said, if any)."""
    msg = f"{method} returned {rc} ({RC_WORDS.get(rc, 'vendor specific')})"
    if words:
        msg += f": {words}"
    if rc in (3, 6):
        return TransientError(msg)
    if rc == 5 or 4097 <= rc <= 4103:
        return UserError(msg)
    if words and NO_SPACE.search(words):
        return OutOfSpace(msg)
    return PermanentError(msg)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """pywbem's exceptions as dpflow's, with the server's description kept."""
    try:
        yield
    except pywbem.CIMError as e:
        text = f"{what}: {e.status_code_name}: {e.status_description}"
        if e.status_code == pywbem.CIM_ERR_NOT_FOUND:
            raise NotFound(text) from e
        if e.status_code in (pywbem.CIM_ERR_INVALID_PARAMETER, pywbem.CIM_ERR_ACCESS_DENIED,
                             pywbem.CIM_ERR_INVALID_NAMESPACE, pywbem.CIM_ERR_INVALID_CLASS):
            raise UserError(text) from e
        raise PermanentError(text) from e
    except pywbem.AuthError as e:
        raise UserError(f"{what}: the array refused the login: {e}") from e
    except pywbem.TimeoutError as e:
        raise TransientError(f"{what}: no answer in time: {e}") from e
    except pywbem.ConnectionError as e:
        if "CERTIFICATE" in str(e).upper():
            raise UserError(f"{what}: the array's certificate is not trusted: {e}") from e
        raise TransientError(f"{what}: connection failed: {e}") from e
    except pywbem.HTTPError as e:
        cls = TransientError if e.status >= 500 else PermanentError
        raise cls(f"{what}: HTTP {e.status} {e.reason}") from e
    except pywbem.Error as e:
        raise PermanentError(f"{what}: {e}") from e


def _state(kind: str, copy_state: int, sync_state: int) -> ReplicaState:
    if copy_state == 5 or sync_state == 12:
        return ReplicaState.BROKEN
    if sync_state in (5, 15):
        return ReplicaState.COPYING
    if sync_state in (13, 7) or copy_state in (6, 7):
        return ReplicaState.FRACTURED
    if kind in (ReplicaKind.SNAPSHOT, ReplicaKind.VSNAP):
        return ReplicaState.ESTABLISHED
    return ReplicaState.SYNCHRONIZED


class SmisArray(SmisRemoteReplication):
    """The ArrayDriver (and RemoteReplication) for an SMI-S provider reached through `conn`."""

    def __init__(self, conn: Any, poll_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = conn
        self.poll_s = poll_s
        self.clock = clock
        self._services: dict[str, CIMInstanceName] = {}

    # ---- plumbing -----------------------------------------------------------------
    def _enum(self, cls: str) -> list[Any]:
        with translated(f"enumerate {cls}"):
            return list(self.conn.EnumerateInstances(cls))

    def _service(self, cls: str) -> CIMInstanceName:
        if cls not in self._services:
            with translated(f"find {cls}"):
                names = self.conn.EnumerateInstanceNames(cls)
            if not names:
                raise UserError(f"the SMI-S provider has no {cls}: not a supported array")
            self._services[cls] = names[0]
        return self._services[cls]

    def _invoke(self, service: str, method: str, deadline_s: float, **params: Any) -> Any:
        """Call an extrinsic method; wait for its job; raise on any refusal."""
        with translated(method):
            rc, out = self.conn.InvokeMethod(method, self._service(service), **params)
        rc = int(rc)
        if rc == 4096:
            self.wait_job(out["Job"], deadline_s, method)
        elif rc != 0:
            raise rc_error(method, rc, out.get("ErrorDescription"))
        return out

    def wait_job(self, job: CIMInstanceName, deadline_s: float, what: str) -> None:
        """Poll a ConcreteJob to its end; TransientError past the deadline."""
        end = self.clock() + deadline_s
        while True:
            with translated(f"{what} job"):
                inst = self.conn.GetInstance(job)
            state = int(inst["JobState"])
            if state == 7:
                return
            if state in JOB_DONE:
                raise PermanentError(
                    f"{what} job {JOB_DONE[state]} (ErrorCode {inst['ErrorCode']}): "
                    f"{inst['ErrorDescription']}")
            if self.clock() >= end:
                raise JobStillRunning(f"{what} job still running after {deadline_s:g}s "
                                     f"({inst['PercentComplete']}% done)")
            time.sleep(self.poll_s)

    # ---- pools and vdisks ------------------------------------------------------------
    def check(self) -> None:
        for cls in ("CIM_ReplicationService", "CIM_StorageConfigurationService",
                    "CIM_ControllerConfigurationService"):
            self._service(cls)

    def list_pools(self) -> list[PoolInfo]:
        return [PoolInfo(name=p["ElementName"], total_bytes=int(p["TotalManagedSpace"]),
                         free_bytes=int(p["RemainingManagedSpace"]))
                for p in self._enum("CIM_StoragePool") if not p["Primordial"]]

    def _volumes(self) -> dict[str, Any]:
        return {v["ElementName"]: v for v in self._enum("CIM_StorageVolume")}

    def list_vdisks(self) -> list[VDiskInfo]:
        pools = {str(p.path.keybindings["InstanceID"]): p["ElementName"]
                 for p in self._enum("CIM_StoragePool")}
        pool_of = {a["Dependent"]["DeviceID"]: pools[a["Antecedent"]["InstanceID"]]
                   for a in self._enum("CIM_AllocatedFromStoragePool")}
        return [VDiskInfo(name=v["ElementName"], wwn=v["Name"],
                          size_bytes=int(v["NumberOfBlocks"]) * int(v["BlockSize"]),
                          pool=pool_of.get(v["DeviceID"], ""))
                for v in self._enum("CIM_StorageVolume")]

    def get_vdisk(self, name: str) -> VDiskInfo:
        for vd in self.list_vdisks():
            if vd.name == name:
                return vd
        raise NotFound(f"no virtual disk named '{name}' on the array")

    def _volume(self, name: str) -> Any:
        vol = self._volumes().get(name)
        if vol is None:
            raise NotFound(f"no virtual disk named '{name}' on the array")
        return vol

    def _pool_path(self, name: str) -> CIMInstanceName:
        for p in self._enum("CIM_StoragePool"):
            if p["ElementName"] == name:
                return p.path
        raise NotFound(f"no disk group named '{name}' on the array")

    def create_vdisk(self, name: str, size_bytes: int, pool: str,
                     deadline_s: float = 60.0) -> VDiskInfo:
        self._invoke("CIM_StorageConfigurationService", "CreateOrModifyElementFromStoragePool",
                     deadline_s, ElementName=name, ElementType=Uint16(2),
                     Size=Uint64(size_bytes), InPool=self._pool_path(pool))
        return self.get_vdisk(name)

    def delete_vdisk(self, name: str, deadline_s: float = 60.0) -> None:
        self._invoke("CIM_StorageConfigurationService", "ReturnToStoragePool", deadline_s,
                     TheElement=self._volume(name).path)

    # ---- replica sets ---------------------------------------------------------------------
    def create_replica_set(self, name: str, sources: list[str], kind: ReplicaKind,
                           pool: str | None = None, deadline_s: float = 300.0) -> ReplicaSet:
        kind = ReplicaKind(kind)
        vols = self._volumes()
        missing = [s for s in sources if s not in vols]
        if missing:
            raise NotFound(f"no virtual disk named {', '.join(missing)} on the array")
        params: dict[str, Any] = {"SyncType": Uint16(SYNC_TYPE[kind]), "Consistency": Uint16(3),
                                  "RelationshipName": name}
        if pool:
            params["TargetPool"] = self._pool_path(pool)
        if kind in (ReplicaKind.SNAPSHOT, ReplicaKind.VSNAP):
            params["Goal"] = self._setting(kind)
        out = self._invoke("CIM_ReplicationService", "CreateGroup", deadline_s,
                           GroupName=f"{name}.sources", Persistent=True,
                           Members=[vols[s].path for s in sources])
        group = out["ReplicationGroup"]
        try:
            self._invoke("CIM_ReplicationService", "CreateGroupReplica", deadline_s,
                         SourceGroup=group, **params)
        except JobStillRunning:
            raise  # the set may still appear: delete_replica_set will drop the group
        except BaseException:
            self._drop_group(group)  # compensation: no source group left behind
            raise
        return self.get_replica_set(name)

    def _setting(self, kind: ReplicaKind) -> CIMInstanceName:
        for s in self._enum("CIM_ReplicationSettingData"):
            if s["ElementName"] == kind.value:
                return s.path
        raise PermanentError(f"the array offers no '{kind.value}' replication setting")

    def _drop_group(self, group: CIMInstanceName) -> None:
        try:
            self._invoke("CIM_ReplicationService", "DeleteGroup", 60.0,
                         ReplicationGroup=group, RemoveElements=False)
        except (TransientError, PermanentError, UserError):
            pass  # best effort: the original error matters more

    def _group_syncs(self) -> dict[str, Any]:
        names = {str(g.path.keybindings["InstanceID"]): g["ElementName"]
                 for g in self._enum("CIM_ReplicationGroup")}
        # remote (Continuous Access) group pairs are DR groups, not replica sets
        return {names[gs["SyncedElement"]["InstanceID"]]: gs
                for gs in self._enum("CIM_GroupSynchronized")
                if gs["SyncedElement"]["InstanceID"] in names
                and gs["Description"] != DR_DESCRIPTION}

    def list_replica_sets(self) -> list[ReplicaSet]:
        return [self._read_set(n, gs) for n, gs in self._group_syncs().items()]

    def get_replica_set(self, name: str) -> ReplicaSet:
        gs = self._group_syncs().get(name)
        if gs is None:
            raise NotFound(f"no replica set named '{name}' on the array")
        return self._read_set(name, gs)

    def _read_set(self, name: str, gs: Any) -> ReplicaSet:
        group_id = gs["SyncedElement"]["InstanceID"]
        members = [m["Member"]["DeviceID"] for m in self._enum("CIM_OrderedMemberOfCollection")
                   if m["Collection"]["InstanceID"] == group_id]
        names = {v["DeviceID"]: v["ElementName"] for v in self._enum("CIM_StorageVolume")}
        syncs = {s["SyncedElement"]["DeviceID"]: s for s in self._enum("CIM_StorageSynchronized")
                 if s["Description"] != DR_DESCRIPTION}
        kind = ReplicaKind(gs["Description"]) if gs["Description"] in set(ReplicaKind) else \
            {7: ReplicaKind.SNAPSHOT, 8: ReplicaKind.SNAPCLONE}.get(
                int(gs["SyncType"]), ReplicaKind.MIRRORCLONE)
        replicas = []
        for dev in members:
            s = syncs[dev]
            cs, ss = int(s["CopyState"]), int(s["SyncState"])
            replicas.append(Replica(source=names[s["SystemElement"]["DeviceID"]],
                                    target=names[dev], state=_state(kind, cs, ss),
                                    copy_state=cs, sync_state=ss))
        return ReplicaSet(name=name, kind=kind, replicas=replicas)

    def _modify(self, name: str, op: str, deadline_s: float) -> Any:
        gs = self._group_syncs().get(name)
        if gs is None:
            raise NotFound(f"no replica set named '{name}' on the array")
        self._invoke("CIM_ReplicationService", "ModifyReplicaSynchronization", deadline_s,
                     Operation=Uint16(OP[op]), Synchronization=gs.path)
        return gs

    def fracture(self, name: str, deadline_s: float = 60.0) -> None:
        self._modify(name, "fracture", deadline_s)

    def resync(self, name: str, deadline_s: float = 300.0) -> None:
        self._modify(name, "resync", deadline_s)

    def restore(self, name: str, deadline_s: float = 300.0) -> None:
        self._modify(name, "restore", deadline_s)

    def delete_replica_set(self, name: str, deadline_s: float = 60.0) -> None:
        gs = self._modify(name, "delete", deadline_s)
        source = gs["SystemElement"]
        if source.classname.lower() == "cim_replicationgroup":
            self._drop_group(source)

    # ---- presentation ---------------------------------------------------------------------
    def _initiators(self, host: str) -> list[str]:
        wwns = [h["StorageID"] for h in self._enum("CIM_StorageHardwareID")
                if h["ElementName"] == host]
        if not wwns:
            raise NotFound(f"no host named '{host}' on the array")
        return wwns

    def present(self, vdisk: str, host: str, lun: int | None = None,
                read_only: bool = False) -> Presentation:
        params: dict[str, Any] = {"LUNames": [self._volume(vdisk)["Name"]],
                                  "InitiatorPortIDs": self._initiators(host),
                                  "DeviceAccesses": [Uint16(3 if read_only else 2)]}
        if lun is not None:
            params["DeviceNumbers"] = [str(lun)]
        self._invoke("CIM_ControllerConfigurationService", "ExposePaths", 60.0, **params)
        return next(p for p in self.list_presentations(vdisk) if p.host == host)

    def unpresent(self, vdisk: str, host: str) -> None:
        self._invoke("CIM_ControllerConfigurationService", "HidePaths", 60.0,
                     LUNames=[self._volume(vdisk)["Name"]],
                     InitiatorPortIDs=self._initiators(host))

    def list_presentations(self, vdisk: str | None = None) -> list[Presentation]:
        hosts = {s["DeviceID"]: s["ElementName"] for s in self._enum("CIM_SCSIProtocolController")}
        names = {v["DeviceID"]: v["ElementName"] for v in self._enum("CIM_StorageVolume")}
        out = [Presentation(vdisk=names[u["Dependent"]["DeviceID"]],
                            host=hosts[u["Antecedent"]["DeviceID"]],
                            lun=int(u["DeviceNumber"]), read_only=int(u["DeviceAccess"]) == 3)
               for u in self._enum("CIM_ProtocolControllerForUnit")]
        return [p for p in out if vdisk is None or p.vdisk == vdisk]

    def close(self) -> None:
        with translated("close"):
            close = getattr(self.conn, "close", None)
            if close:
                close()

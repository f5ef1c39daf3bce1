"""The model as CIM instances: what a client enumerates, gets and associates.

Why rebuilt from the model before each request: the model is the only truth (host
writes, clocks and other connections change it); the instances are a view, cheap to
rebuild for an array of this size (one pass, no validation), and never drift.
"""

from __future__ import annotations

from collections.abc import Iterator

from pywbem import CIMInstance, CIMInstanceName, Uint16, Uint64

from simulators.eva.jobs import JOB_COMPLETED, JOB_EXCEPTION
from simulators.eva.model import EvaArray
from simulators.eva.objects import Pair, VDisk

NS = "root/eva"
SYS_CLASS = "CIM_ComputerSystem"
# status -> (CopyState, SyncState); kind -> (SyncType, CopyType, Mode)
STATUS_STATES = {"established": (4, 6), "synchronized": (4, 6), "fractured": (6, 13),
                 "copying": (3, 15), "broken": (5, 12)}
KIND_TYPES = {"snapshot": (7, 4, 3), "vsnap": (7, 4, 3), "snapclone": (8, 5, 3),
              "mirrorclone": (6, 3, 2)}
SYNC_TYPE_KINDS = {6: "mirrorclone", 7: "vsnap", 8: "snapclone"}


def path(cls: str, **keys: object) -> CIMInstanceName:
    return CIMInstanceName(cls, keybindings=keys, namespace=NS)


def system_path(a: EvaArray) -> CIMInstanceName:
    return path(SYS_CLASS, CreationClassName=SYS_CLASS, Name=a.name)


def service_path(a: EvaArray, cls: str) -> CIMInstanceName:
    return path(cls, SystemCreationClassName=SYS_CLASS, SystemName=a.name,
                CreationClassName=cls, Name=f"{a.name}:{cls}")


def pool_path(a: EvaArray, pool: str) -> CIMInstanceName:
    return path("CIM_StoragePool", InstanceID=f"{a.name}:DG:{pool}")


def volume_path(a: EvaArray, vd: VDisk) -> CIMInstanceName:
    return path("CIM_StorageVolume", SystemCreationClassName=SYS_CLASS, SystemName=a.name,
                CreationClassName="CIM_StorageVolume", DeviceID=vd.id)


def spc_path(a: EvaArray, host: str) -> CIMInstanceName:
    return path("CIM_SCSIProtocolController", SystemCreationClassName=SYS_CLASS,
                SystemName=a.name, CreationClassName="CIM_SCSIProtocolController",
                DeviceID=f"SPC:{host}")


def group_path(a: EvaArray, name: str, replica_set: bool) -> CIMInstanceName:
    tag = "RS" if replica_set else "G"
    return path("CIM_ReplicationGroup", InstanceID=f"{a.name}:{tag}:{name}")


def job_path(job_id: str) -> CIMInstanceName:
    return path("CIM_ConcreteJob", InstanceID=job_id)


def sync_path(a: EvaArray, p: Pair) -> CIMInstanceName:
    return path("CIM_StorageSynchronized",
                SystemElement=volume_path(a, a.vdisks[p.source]),
                SyncedElement=volume_path(a, a.vdisks[p.target]))


def group_sync_path(a: EvaArray, set_name: str) -> CIMInstanceName:
    rs = a.sets[set_name]
    src = group_path(a, rs.source_group, False) if rs.source_group else system_path(a)
    return path("CIM_GroupSynchronized", SystemElement=src,
                SyncedElement=group_path(a, set_name, True))


def _inst(p: CIMInstanceName, **props: object) -> CIMInstance:
    inst = CIMInstance(p.classname, properties=dict(p.keybindings), path=p)
    for k, v in props.items():
        inst[k] = v
    return inst


def _sync_props(a: EvaArray, kind: str, status: str) -> dict[str, object]:
    copy_state, sync_state = STATUS_STATES[status]
    sync_type, copy_type, mode = KIND_TYPES[kind]
    return dict(SyncMaintained=kind == "mirrorclone", CopyState=Uint16(copy_state),
                SyncState=Uint16(sync_state), CopyType=Uint16(copy_type),
                SyncType=Uint16(sync_type), Mode=Uint16(mode),
                PercentSynced=Uint16(50 if status == "copying" else 100), Description=kind)


def build(a: EvaArray) -> Iterator[CIMInstance]:
    """Every instance the array shows, from the model as it is now (lock held)."""
    yield _inst(system_path(a), ElementName=a.name, OperationalStatus=[Uint16(2)])
    for cls in ("CIM_StorageConfigurationService", "CIM_ControllerConfigurationService",
                "CIM_ReplicationService"):
        yield _inst(service_path(a, cls), ElementName=cls)
    for kind, space_efficient in (("vsnap", True), ("snapshot", False)):
        yield _inst(path("CIM_ReplicationSettingData", InstanceID=f"{a.name}:RSD:{kind}"),
                    ElementName=kind, ThinProvisioningPolicy=Uint16(2 if space_efficient else 3))
    for pool in a.pools.values():
        yield _inst(pool_path(a, pool.name), ElementName=pool.name, PoolID=pool.name,
                    Primordial=False, TotalManagedSpace=Uint64(pool.capacity),
                    RemainingManagedSpace=Uint64(a.pool_free(pool.name)))
    for vd in a.vdisks.values():
        vp = volume_path(a, vd)
        yield _inst(vp, ElementName=vd.name, Name=vd.id, NameFormat=Uint16(1),
                    BlockSize=Uint64(512), NumberOfBlocks=Uint64(vd.size // 512),
                    ConsumableBlocks=Uint64(vd.size // 512), OperationalStatus=[Uint16(2)])
        yield _inst(path("CIM_AllocatedFromStoragePool", Antecedent=pool_path(a, vd.pool),
                         Dependent=vp), SpaceConsumed=Uint64(vd.reserved()))
    for host, wwns in a.hosts.items():
        sp = spc_path(a, host)
        yield _inst(sp, ElementName=host)
        for wwn in wwns:
            hp = path("CIM_StorageHardwareID", InstanceID=f"{host}:{wwn}")
            yield _inst(hp, ElementName=host, StorageID=wwn, IDType=Uint16(2))
            yield _inst(path("CIM_AssociatedPrivilege", Subject=hp, Target=sp))
    for (vd_name, host), (lun, ro) in a.presentations.items():
        yield _inst(path("CIM_ProtocolControllerForUnit", Antecedent=spc_path(a, host),
                         Dependent=volume_path(a, a.vdisks[vd_name])),
                    DeviceNumber=str(lun), DeviceAccess=Uint16(3 if ro else 2))
    for name, members in a.groups.items():
        gp = group_path(a, name, False)
        yield _inst(gp, ElementName=name, Persistent=True)
        for i, m in enumerate(members):
            yield _inst(path("CIM_OrderedMemberOfCollection", Collection=gp,
                             Member=volume_path(a, a.vdisks[m])), AssignedSequence=Uint64(i))
    for rs in a.sets.values():
        gp = group_path(a, rs.name, True)
        yield _inst(gp, ElementName=rs.name, Persistent=True)
        statuses = []
        for i, pid in enumerate(rs.pairs):
            p = a.pairs[pid]
            status = a.pair_status(p)
            statuses.append(status)
            yield _inst(path("CIM_OrderedMemberOfCollection", Collection=gp,
                             Member=volume_path(a, a.vdisks[p.target])),
                        AssignedSequence=Uint64(i))
            yield _inst(sync_path(a, p), ElementName=p.id, **_sync_props(a, p.kind, status))
        worst = next((s for s in ("broken", "copying") if s in statuses), statuses[0])
        yield _inst(group_sync_path(a, rs.name), ElementName=rs.name,
                    **_sync_props(a, rs.kind, worst))
    now = a.clock.now()
    for job in a.jobs.values():
        state = job.state(now)
        ops = {JOB_COMPLETED: [2, 17], JOB_EXCEPTION: [6, 17]}.get(state, [2])
        jp = job_path(job.id)
        yield _inst(jp, Name=job.name, JobState=Uint16(state),
                    PercentComplete=Uint16(job.percent(now)),
                    ErrorCode=Uint16(job.error_code or 0),
                    ErrorDescription=job.error_description,
                    OperationalStatus=[Uint16(x) for x in ops], DeleteOnCompletion=False)
        if state == JOB_EXCEPTION:
            continue
        for kind, name in job.affected:
            target = _affected_path(a, kind, name)
            if target is not None:
                yield _inst(path("CIM_AffectedJobElement", AffectedElement=target,
                                 AffectingElement=jp))


def _affected_path(a: EvaArray, kind: str, name: str) -> CIMInstanceName | None:
    if kind == "vdisk" and name in a.vdisks:
        return volume_path(a, a.vdisks[name])
    if kind == "set" and name in a.sets:
        return group_path(a, name, True)
    if kind == "group" and name in a.groups:
        return group_path(a, name, False)
    return None

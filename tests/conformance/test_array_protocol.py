"""One conformance suite for the ArrayDriver protocol.

Run over the real SMI-S driver against the simulated EVA twice: through a plain
pywbem.WBEMConnection to the HTTPS server process (certificate verified), and through
the in-process faked connection. Any other ArrayDriver gets a new `rig` param.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dpflow.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import ArrayDriver, ReplicaKind, ReplicaState
from drivers.smis import SmisArray
from simulators.eva import EvaArray
from simulators.eva.cim import faked_connection
from simulators.eva.process import EvaServer

MiB = 1 << 20
POOL = "DG1"
HOSTS = {"proxy": ["50014380000000A1"], "dbhost": ["50014380000000B1"]}


@dataclass
class Rig:
    driver: ArrayDriver
    faults: Any  # fail_method / fail_job / hang / fill_pool / clear
    port: Any  # host_port(host) -> read/write by LUN
    set_jobs: Any  # (job_mode, job_seconds)


@pytest.fixture(scope="module", params=["https", "faked"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Rig]:
    root: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "https":
        with EvaServer.start(root, pools={POOL: 256 * MiB}, hosts=HOSTS) as eva:
            drv = SmisArray(eva.connection(timeout=1.0), poll_s=0.02)
            yield Rig(drv, eva.faults, eva.host_port, eva.set_jobs)
            drv.close()
    else:
        array = EvaArray(root)
        array.add_pool(POOL, 256 * MiB)
        for h, w in HOSTS.items():
            array.add_host(h, w)

        class LocalFaults:
            def __getattr__(self, name: str) -> Any:
                if name == "fill_pool":
                    return array.fill_pool
                return getattr(array.faults, name)

            def clear(self) -> None:
                array.faults.clear()
                array.fill_pool(POOL, False)

        def set_jobs(mode: bool, seconds: float = 0.0) -> None:
            array.job_mode, array.job_seconds = mode, seconds

        yield Rig(SmisArray(faked_connection(array), poll_s=0.02), LocalFaults(),
                  array.host_port, set_jobs)
        array.close()


@pytest.fixture
def rig(backend: Rig, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Each test starts clean: no faults, no replica sets, no presentations, no vdisks."""
    backend.faults.clear()
    backend.set_jobs(True, 0.05)
    yield backend
    backend.faults.clear()
    d = backend.driver
    for p in d.list_presentations():
        d.unpresent(p.vdisk, p.host)
    for rs in d.list_replica_sets():
        d.delete_replica_set(rs.name)
    for v in d.list_vdisks():
        d.delete_vdisk(v.name)


def lun_of(d: ArrayDriver, vdisk: str, host: str) -> int:
    return next(p.lun for p in d.list_presentations(vdisk) if p.host == host)


def two_luns(rig: Rig, size: int = 4 * MiB) -> tuple[int, int]:
    d = rig.driver
    d.create_vdisk("data", size, POOL)
    d.create_vdisk("logs", size, POOL)
    return d.present("data", "dbhost").lun, d.present("logs", "dbhost").lun


def test_pools_and_vdisks(rig: Rig) -> None:
    d = rig.driver
    d.check()
    free = d.list_pools()[0].free_bytes
    v = d.create_vdisk("v1", 8 * MiB, POOL)
    assert (v.name, v.size_bytes, v.pool) == ("v1", 8 * MiB, POOL)
    assert d.list_pools()[0].free_bytes == free - 8 * MiB
    assert [x.name for x in d.list_vdisks()] == ["v1"]
    d.delete_vdisk("v1")
    with pytest.raises(NotFound):
        d.get_vdisk("v1")


@pytest.mark.parametrize("kind", list(ReplicaKind))
def test_each_kind_holds_its_point_in_time(rig: Rig, kind: ReplicaKind) -> None:
    d = rig.driver
    a, b = two_luns(rig)
    host = rig.port("dbhost")
    host.write(a, 0, b"A0" * 1000)
    host.write(b, 5 * 1000, b"B0" * 1000)
    rs = d.create_replica_set("bc", ["data", "logs"], kind)
    assert [r.target for r in rs.replicas] == ["bc-data", "bc-logs"]
    want = ReplicaState.SYNCHRONIZED if kind == ReplicaKind.MIRRORCLONE else (
        ReplicaState.ESTABLISHED if kind in (ReplicaKind.SNAPSHOT, ReplicaKind.VSNAP)
        else ReplicaState.FRACTURED)
    assert {r.state for r in d.get_replica_set("bc").replicas} == {want}
    if kind == ReplicaKind.MIRRORCLONE:
        d.fracture("bc")
        assert {r.state for r in d.get_replica_set("bc").replicas} == {ReplicaState.FRACTURED}
    host.write(a, 0, b"A1" * 1000)  # after the point in time
    t = d.present("bc-data", "proxy", read_only=True).lun
    assert rig.port("proxy").read(t, 0, 2000) == b"A0" * 1000
    d.unpresent("bc-data", "proxy")
    # restore: the source is back at the point in time
    d.unpresent("data", "dbhost")
    d.unpresent("logs", "dbhost")
    d.restore("bc")
    a, b = d.present("data", "dbhost").lun, d.present("logs", "dbhost").lun
    assert host.read(a, 0, 2000) == b"A0" * 1000
    assert host.read(b, 5000, 2000) == b"B0" * 1000


def test_group_is_one_point_in_time_under_a_concurrent_writer(rig: Rig) -> None:
    """Dependent writes: B gets n only after A got n. A consistent copy has A-B in {0,1}."""
    d = rig.driver
    a, b = two_luns(rig)
    host = rig.port("dbhost")
    stop = threading.Event()
    count = [0]

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            host.write(a, 0, n.to_bytes(8, "big"))
            host.write(b, 0, n.to_bytes(8, "big"))
            time.sleep(0.0005)  # let the driver's polls through (one GIL in faked mode)
        count[0] = n

    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(3):
            d.create_replica_set(f"cg{i}", ["data", "logs"], ReplicaKind.VSNAP)
    finally:
        stop.set()
        t.join()
    assert count[0] > 3
    for i in range(3):
        la = d.present(f"cg{i}-data", "proxy").lun
        lb = d.present(f"cg{i}-logs", "proxy").lun
        na = int.from_bytes(rig.port("proxy").read(la, 0, 8), "big")
        nb = int.from_bytes(rig.port("proxy").read(lb, 0, 8), "big")
        assert na - nb in (0, 1), (na, nb)


def test_presentation_and_luns(rig: Rig) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    p = d.present("v1", "proxy", lun=7)
    assert (p.vdisk, p.host, p.lun) == ("v1", "proxy", 7)
    rig.port("proxy").write(7, 10, b"xyz")
    assert rig.port("proxy").read(7, 10, 3) == b"xyz"
    with pytest.raises(Exception):  # noqa: B017 - not presented to that host: no path
        rig.port("dbhost").read(7, 0, 1)
    with pytest.raises(UserError):
        d.present("v1", "proxy")  # already presented
    with pytest.raises(NotFound):
        d.present("v1", "nohost")
    d.unpresent("v1", "proxy")
    assert d.list_presentations() == []


def test_refusals(rig: Rig) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    with pytest.raises(UserError, match="already exists"):
        d.create_vdisk("v1", MiB, POOL)
    with pytest.raises(PermanentError, match="insufficient free space"):
        d.create_vdisk("huge", 1 << 40, POOL)
    d.present("v1", "proxy")
    with pytest.raises(TransientError, match="presented"):
        d.delete_vdisk("v1")
    d.unpresent("v1", "proxy")
    d.create_replica_set("s", ["v1"], ReplicaKind.SNAPSHOT)
    with pytest.raises(TransientError, match="has replicas"):
        d.delete_vdisk("v1")
    with pytest.raises(UserError, match="illegal state change"):
        d.fracture("s")  # a snapshot cannot fracture
    with pytest.raises(UserError, match="already exists"):
        d.create_replica_set("s", ["v1"], ReplicaKind.VSNAP)
    d.present("v1", "dbhost")
    with pytest.raises(TransientError, match="presented"):
        d.restore("s")  # a source in use by a host is not restored under it
    d.unpresent("v1", "dbhost")
    d.create_replica_set("m", ["v1"], ReplicaKind.MIRRORCLONE)
    with pytest.raises(UserError, match="illegal state change"):
        d.restore("m")  # a synchronised mirror must be fractured first
    d.fracture("m")
    with pytest.raises(UserError, match="illegal state change"):
        d.fracture("m")  # same state again
    with pytest.raises(NotFound):
        d.restore("nope")


def test_vsnap_breaks_when_the_pool_fills(rig: Rig) -> None:
    d = rig.driver
    a, _ = two_luns(rig)
    d.create_replica_set("vs", ["data", "logs"], ReplicaKind.VSNAP)
    rig.faults.fill_pool(POOL)
    with pytest.raises(PermanentError, match="insufficient free space"):
        d.create_replica_set("full", ["data"], ReplicaKind.SNAPCLONE)
    rig.port("dbhost").write(a, 0, b"new")
    states = {r.target: r.state for r in d.get_replica_set("vs").replicas}
    assert states == {"vs-data": ReplicaState.BROKEN, "vs-logs": ReplicaState.ESTABLISHED}
    with pytest.raises(UserError, match="illegal state change"):
        d.restore("vs")


@pytest.mark.parametrize("rc,error", [(4, PermanentError), (6, TransientError)])
def test_injected_return_codes(rig: Rig, rc: int, error: type[Exception]) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    rig.faults.fail_method("CreateGroupReplica", rc=rc, description="controller says no")
    with pytest.raises(error, match="controller says no"):
        d.create_replica_set("r", ["v1"], ReplicaKind.SNAPCLONE)
    assert d.list_replica_sets() == []  # nothing left behind
    d.delete_vdisk("v1")  # the source group was compensated


def test_injected_job_exception(rig: Rig) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    rig.faults.fail_job("CreateGroupReplica", error_code=0x8010, description="disk failure")
    with pytest.raises(PermanentError, match=r"Exception \(ErrorCode 32784\): disk failure"):
        d.create_replica_set("r", ["v1"], ReplicaKind.SNAPCLONE)
    assert d.list_replica_sets() == []


def test_injected_provider_timeout(rig: Rig) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    d.create_replica_set("r", ["v1"], ReplicaKind.SNAPSHOT)
    rig.faults.hang("ModifyReplicaSynchronization", seconds=1.3)
    with pytest.raises(TransientError):
        d.restore("r")
    d.restore("r")  # the fault was for one call: a retry works


def test_job_deadline(rig: Rig) -> None:
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    rig.set_jobs(True, 0.6)
    with pytest.raises(TransientError, match="still running"):
        d.create_replica_set("slow", ["v1"], ReplicaKind.SNAPSHOT, deadline_s=0.2)
    rig.set_jobs(False)
    assert d.get_replica_set("slow").kind == ReplicaKind.SNAPSHOT  # it did happen


def test_synchronous_answers(rig: Rig) -> None:
    rig.set_jobs(False)
    d = rig.driver
    d.create_vdisk("v1", MiB, POOL)
    rs = d.create_replica_set("m", ["v1"], ReplicaKind.MIRRORCLONE)
    assert rs.replicas[0].state == ReplicaState.SYNCHRONIZED
    d.fracture("m")
    d.resync("m")
    assert d.get_replica_set("m").replicas[0].state == ReplicaState.SYNCHRONIZED

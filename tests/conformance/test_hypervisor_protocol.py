"""One conformance suite for the Hypervisor protocol (its contract: drivers/protocols.py).

Run over the real pyVmomi driver against the session's vcsim (HTTPS, verified). The
`world` is what the hypervisor's users and guests do and what the network does to it
(simulators.vcsim: guest writes, fault rules, ended sessions); it never goes through the
driver under test. Another implementation gets a new `rig` param.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dpflow.config import VCenter
from drivers.errors import NotFound, PermanentError, TransientError, UserError
from drivers.protocols import (
    CbtUnusable,
    DiskReader,
    Hypervisor,
    QuiesceFailed,
    TaskDeadlineExceeded,
)

MiB = 1 << 20


@dataclass
class Rig:
    hv: Hypervisor
    world: Any  # simulators.vcsim.Vcsim
    make: Any  # (password, **endpoint settings) -> a new Hypervisor on the same endpoint


@pytest.fixture(params=["vsphere"])
def rig(request: pytest.FixtureRequest, vcsim: Any) -> Iterator[Rig]:
    from drivers.vsphere import VSphere

    def make(password: str = vcsim.password, **settings: float) -> Hypervisor:
        vc = VCenter(name="vcsim", host=vcsim.host, port=vcsim.port, user=vcsim.username,
                     password={"env": "UNUSED"}, ca_file=vcsim.ca_file, **settings)
        return VSphere(vc, password)

    vcsim.clear_faults()
    hv = make()
    yield Rig(hv, vcsim, make)
    hv.close()
    vcsim.clear_faults()


def new_vm(world: Any, sizes: list[int], seed: int = 1) -> tuple[str, list[bytes]]:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    world.create_vm(name, sizes)
    rnd = random.Random(seed)
    contents = []
    for i, size in enumerate(sizes):
        data = rnd.randbytes(size)
        world.seed_disk(name, i, data)
        contents.append(data)
    return name, contents


def read_all(reader: DiskReader) -> bytes:
    return b"".join(bytes(reader.read(o, min(MiB, reader.size - o)))
                    for o in range(0, reader.size, MiB))


def test_check_and_a_wrong_password(rig: Rig) -> None:
    rig.hv.check()
    bad = rig.make(password="not-the-password")
    with pytest.raises(UserError, match="InvalidLogin"):
        bad.check()


def test_find_vm_describes_its_disks(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [2 * MiB, MiB + 4096])
    vm = rig.hv.find_vm(name)
    assert vm.name == name and vm.moref
    assert [d.capacity_bytes for d in vm.disks] == [2 * MiB, MiB + 4096]
    assert all(d.datastore == vm.datastore for d in vm.disks)
    assert rig.hv.raw_disks(vm) == []  # no raw device mapping on this VM
    assert rig.hv.vm_exists(name)
    with pytest.raises(NotFound):
        rig.hv.find_vm(f"{name}-missing")
    assert not rig.hv.vm_exists(f"{name}-missing")


def test_datastore_free_bytes(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB])
    vm = rig.hv.find_vm(name)
    assert rig.hv.datastore_free_bytes(vm.datastore) > 0
    with pytest.raises(NotFound):
        rig.hv.datastore_free_bytes("no-such-datastore")


def test_snapshot_freezes_its_disks_and_removal_is_idempotent(rig: Rig) -> None:
    name, (data,) = new_vm(rig.world, [2 * MiB])
    vm = rig.hv.find_vm(name)
    snap = rig.hv.create_snapshot(vm, "dpflow-conf", quiesce=False)
    assert [s.name for s in rig.hv.list_snapshots(vm)] == ["dpflow-conf"]
    with open(rig.world.current_disk_path(name, 0), "r+b") as live:  # the guest writes on
        live.write(b"\xff" * 4096)
    (frozen,) = rig.hv.snapshot_disks(snap)
    reader = rig.hv.open_disk(frozen)
    try:
        assert reader.size == 2 * MiB
        assert read_all(reader) == data
    finally:
        reader.close()
    rig.hv.remove_snapshot(snap)
    rig.hv.remove_snapshot(snap)  # gone: a no-op
    assert rig.hv.list_snapshots(vm) == []
    (now,) = rig.hv.find_vm(name).disks
    reader = rig.hv.open_disk(now)
    try:  # removal kept the guest's writes
        assert bytes(reader.read(0, 8192)) == b"\xff" * 4096 + data[4096:8192]
    finally:
        reader.close()


def test_reader_gives_exact_ranges_from_many_threads(rig: Rig) -> None:
    name, (data,) = new_vm(rig.world, [3 * MiB + 1024])
    reader = rig.hv.open_disk(rig.hv.find_vm(name).disks[0])
    rnd = random.Random(7)
    ranges = [(o, rnd.randint(1, 300_000)) for o in
              (rnd.randrange(0, len(data) - 300_000) for _ in range(24))]
    ranges.append((len(data) - 1000, 1000))  # the last bytes of the disk
    bad: list[tuple[int, int]] = []

    def work(part: list[tuple[int, int]]) -> None:
        for off, n in part:
            if bytes(reader.read(off, n)) != data[off:off + n]:
                bad.append((off, n))

    threads = [threading.Thread(target=work, args=(ranges[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.close()
    assert bad == []


def test_cut_and_refused_transfers_are_resumed(rig: Rig) -> None:
    name, (data,) = new_vm(rig.world, [2 * MiB])
    reader = rig.hv.open_disk(rig.hv.find_vm(name).disks[0])
    cut = rig.world.set_fault(path=r"-flat\.vmdk$", kind="drop_after", bytes=100_000, count=2)
    refused = rig.world.set_fault(path=r"-flat\.vmdk$", kind="http", status=503, count=2)
    try:
        assert read_all(reader) == data
    finally:
        reader.close()
    hits = {r["id"]: r["hits"] for r in rig.world.faults()}
    assert hits[cut["id"]] == 2 and hits[refused["id"]] == 2


def test_a_read_failing_for_good_is_transient_after_bounded_attempts(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB])
    reader = rig.hv.open_disk(rig.hv.find_vm(name).disks[0])
    rule = rig.world.set_fault(path=r"-flat\.vmdk$", kind="http", status=503, count=0)
    try:
        with pytest.raises(TransientError, match="failed 6 times"):
            reader.read(0, 4096)
    finally:
        reader.close()
    assert [r["hits"] for r in rig.world.faults() if r["id"] == rule["id"]] == [6]


@pytest.mark.parametrize(("rule", "error"), [
    ({"kind": "soap", "fault": "SystemError"}, TransientError),
    ({"kind": "http", "status": 503}, TransientError),
    ({"kind": "drop"}, TransientError),
    ({"kind": "soap", "fault": "InvalidArgument"}, PermanentError),
])
def test_errors_are_typed_by_what_a_retry_can_do(rig: Rig, rule: dict[str, Any],
                                                 error: type[Exception]) -> None:
    name, _ = new_vm(rig.world, [MiB])
    rig.hv.check()
    placed = rig.world.set_fault(method="CreateContainerView", count=1, **rule)
    with pytest.raises(error) as info:
        rig.hv.find_vm(name)
    if error is PermanentError:
        assert not isinstance(info.value, TransientError)
    assert [r["hits"] for r in rig.world.faults() if r["id"] == placed["id"]] == [1]
    assert rig.hv.find_vm(name).name == name  # no retry inside: the next call works


@pytest.mark.parametrize(("fault", "error"), [
    ("Timedout", TransientError),
    ("ApplicationQuiesceFault", QuiesceFailed),
    ("InvalidState", PermanentError),
])
def test_task_faults_are_typed(rig: Rig, fault: str, error: type[Exception]) -> None:
    name, _ = new_vm(rig.world, [MiB])
    vm = rig.hv.find_vm(name)
    rig.world.set_fault(method="CreateSnapshot_Task", kind="task", fault=fault, count=1)
    with pytest.raises(error, match=fault):
        rig.hv.create_snapshot(vm, "dpflow-fault", quiesce=True)
    assert rig.hv.list_snapshots(vm) == []


def test_a_task_past_its_deadline_names_itself(rig: Rig) -> None:
    hv = rig.make(task_timeout_s=0.2)
    try:
        name, _ = new_vm(rig.world, [MiB])
        vm = hv.find_vm(name)
        rig.world.set_fault(method="CreateSnapshot_Task", kind="hold", ms=1500, count=1)
        with pytest.raises(TaskDeadlineExceeded) as info:
            hv.create_snapshot(vm, "dpflow-slow", quiesce=False)
        assert isinstance(info.value, TransientError) and info.value.task
    finally:
        hv.close()


def test_an_ended_session_is_invisible_to_the_caller(rig: Rig) -> None:
    name, (data,) = new_vm(rig.world, [MiB])
    vm = rig.hv.find_vm(name)
    reader = rig.hv.open_disk(vm.disks[0])
    before = rig.world.sessions()
    rig.world.expire_sessions()
    assert rig.hv.list_snapshots(vm) == []  # SOAP
    try:
        assert read_all(reader) == data  # datastore HTTP, reader opened before the end
    finally:
        reader.close()
    after = rig.world.sessions()
    assert after["refused_soap"] > before["refused_soap"]
    assert after["refused_http"] > before["refused_http"]


def test_change_tracking(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [4 * MiB])
    vm = rig.hv.find_vm(name)
    assert rig.hv.enable_change_tracking(vm) is True
    assert rig.hv.enable_change_tracking(vm) is False  # already on
    s1 = rig.hv.create_snapshot(vm, "dpflow-cbt1", quiesce=False)
    (d1,) = rig.hv.snapshot_disks(s1)
    assert d1.change_id
    rig.hv.remove_snapshot(s1)
    with open(rig.world.current_disk_path(name, 0), "r+b") as live:
        live.seek(3 * MiB)
        live.write(b"\x01" * 5000)
    s2 = rig.hv.create_snapshot(vm, "dpflow-cbt2", quiesce=False)
    try:
        (d2,) = rig.hv.snapshot_disks(s2)
        areas = rig.hv.changed_areas(s2, d2, d1.change_id)
        assert areas and all(3 * MiB <= a < 3 * MiB + 5000 + 65536 for a, _ in areas)
        assert sum(n for _, n in areas) >= 5000
        with pytest.raises(CbtUnusable):
            rig.hv.changed_areas(s2, d2, "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/9")
    finally:
        rig.hv.remove_snapshot(s2)


def test_create_write_power_and_destroy_a_vm(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB, 2 * MiB])
    spec = rig.hv.find_vm(name)
    target = f"{name}-new"
    made = rig.hv.create_vm(spec, target)
    assert [d.capacity_bytes for d in made.disks] == [MiB, 2 * MiB]
    payload = random.Random(3).randbytes(2 * MiB)
    rig.hv.write_disk(made.disks[1], (payload[i:i + 65536] for i in range(0, 2 * MiB, 65536)))
    reader = rig.hv.open_disk(made.disks[1])
    try:
        assert read_all(reader) == payload
    finally:
        reader.close()
    rig.hv.power_on(made)
    rig.hv.power_on(made)  # already on: a no-op
    assert rig.hv.find_vm(target).power_state == "poweredOn"
    rig.hv.power_off(made)
    rig.hv.power_off(made)  # already off: a no-op
    assert rig.hv.find_vm(target).power_state == "poweredOff"
    rig.hv.destroy_vm(made)
    rig.hv.destroy_vm(made)  # gone: a no-op
    assert not rig.hv.vm_exists(target)


def test_create_snapshot_is_idempotent_by_name(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB])
    vm = rig.hv.find_vm(name)
    first = rig.hv.create_snapshot(vm, "dpflow-idem", quiesce=False)
    again = rig.hv.create_snapshot(vm, "dpflow-idem", quiesce=False)
    assert again.moref == first.moref
    assert [s.name for s in rig.hv.list_snapshots(vm)] == ["dpflow-idem"]
    rig.hv.remove_snapshot(first)


def test_snapshots_named_finds_them_on_every_vm(rig: Rig) -> None:
    names = [new_vm(rig.world, [MiB])[0] for _ in range(2)]
    prefix = f"dpflow-named-{uuid.uuid4().hex[:6]}-"
    made = [rig.hv.create_snapshot(rig.hv.find_vm(n), f"{prefix}{i}", quiesce=False)
            for i, n in enumerate(names)]
    rig.world.create_snapshot(names[0], "an admin's own")
    try:
        found = rig.hv.snapshots_named(prefix)
        assert sorted((s.vm_name, s.name, s.moref) for s in found) == sorted(
            (n, s.name, s.moref) for n, s in zip(names, made, strict=True))
    finally:
        for s in made:
            rig.hv.remove_snapshot(s)
        rig.world.remove_snapshot(names[0], "an admin's own")


def test_create_vm_with_a_marker_is_idempotent(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB])
    spec = rig.hv.find_vm(name)
    made = rig.hv.create_vm(spec, f"{name}-m", marker="restore 42")
    again = rig.hv.create_vm(spec, f"{name}-m", marker="restore 42")
    assert again.moref == made.moref and again.annotation == "restore 42"
    assert [(v.name, v.moref) for v in rig.hv.vms_marked("restore 4")] == [
        (f"{name}-m", made.moref)]
    rig.hv.destroy_vm(made)
    assert rig.hv.vms_marked("restore 4") == []


@pytest.mark.parametrize("method", ["CreateSnapshot_Task", "CreateVM_Task"])
def test_a_call_whose_answer_was_lost_is_found_not_repeated(rig: Rig, method: str) -> None:
    """The SOAP call times out on the client; vCenter carries it out later. The driver
    finds the result instead of calling again."""
    hv = rig.make(call_timeout_s=1.0, hunt_s=15.0)
    name, _ = new_vm(rig.world, [MiB])
    try:
        vm = hv.find_vm(name)
        slow = rig.world.set_fault(method=method, kind="delay", ms=2500, count=1)
        later = rig.world.set_fault(method=method, kind="delay", ms=0, count=0)  # counts
        if method == "CreateSnapshot_Task":
            snap = hv.create_snapshot(vm, "dpflow-lost", quiesce=False)
            assert [s.moref for s in hv.list_snapshots(vm)] == [snap.moref]
            hv.remove_snapshot(snap)
        else:
            made = hv.create_vm(vm, f"{name}-lost", marker="restore lost")
            assert made.annotation == "restore lost"
            hv.destroy_vm(made)
        hits = {r["id"]: r["hits"] for r in rig.world.faults()}
        assert hits[slow["id"]] == 1 and hits[later["id"]] == 0  # one call reached vCenter
    finally:
        hv.close()


def test_a_vm_name_in_use_is_refused(rig: Rig) -> None:
    name, _ = new_vm(rig.world, [MiB])
    spec = rig.hv.find_vm(name)
    with pytest.raises(PermanentError, match="DuplicateName"):
        rig.hv.create_vm(spec, name)
    with pytest.raises(PermanentError, match="DuplicateName"):  # another's marker: no adoption
        rig.hv.create_vm(spec, name, marker="restore 43")
    assert rig.hv.find_vm(name).moref == spec.moref

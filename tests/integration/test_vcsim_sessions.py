"""vCenter sessions that end, slow calls and slow tasks: the pyVmomi driver against vcsim.

The simulator ends sessions on demand (/_session, or fault rules of kind "expire"); every
test checks from the simulator's own counters that the expiry fired and that the driver
logged in again, not only that the call succeeded.
"""

from __future__ import annotations

import time
import uuid

import pytest

from dpflow.config import VCenter
from dpflow.errors import TransientError
from drivers.protocols import TaskDeadlineExceeded
from drivers.vsphere import VSphere

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _no_faults(vcsim):
    vcsim.clear_faults()
    yield
    vcsim.clear_faults()


def driver(vcsim, **timeouts: float) -> VSphere:
    vc = VCenter(name="vcsim", host=vcsim.host, port=vcsim.port, user=vcsim.username,
                 password={"env": "UNUSED"}, ca_file=vcsim.ca_file, **timeouts)
    return VSphere(vc, vcsim.password)


def new_vm(vcsim, sizes: list[int]) -> str:
    name = f"sess-{uuid.uuid4().hex[:10]}"
    vcsim.create_vm(name, sizes)
    return name


def test_soap_call_after_expiry_logs_in_again(vcsim):
    name = new_vm(vcsim, [MiB])
    hv = driver(vcsim)
    try:
        hv.find_vm(name)
        before = vcsim.sessions()
        vcsim.expire_sessions()
        assert hv.find_vm(name).name == name
        after = vcsim.sessions()
        assert after["expired"] > before["expired"]
        assert after["refused_soap"] > before["refused_soap"]  # the old session was refused
        assert hv.logins == 2
    finally:
        hv.close()


def test_expiry_before_a_task_method_runs_it_once(vcsim):
    """The task's method met an ended session: refused, so re-running it is safe."""
    name = new_vm(vcsim, [MiB])
    hv = driver(vcsim)
    try:
        vm = hv.find_vm(name)
        rule = vcsim.set_fault(method="CreateSnapshot_Task", kind="expire", count=1)
        snap = hv.create_snapshot(vm, "dpflow-once", quiesce=False)
        assert [r["hits"] for r in vcsim.faults() if r["id"] == rule["id"]] == [1]
        assert hv.logins == 2
        assert [s.name for s in hv.list_snapshots(vm)] == ["dpflow-once"]
        hv.remove_snapshot(snap)
    finally:
        hv.close()


def test_datastore_read_after_expiry_gets_a_fresh_cookie(vcsim):
    name = new_vm(vcsim, [4 * MiB])
    data = bytes(range(256)) * (4 * MiB // 256)
    vcsim.seed_disk(name, 0, data)
    hv = driver(vcsim)
    try:
        disk = hv.find_vm(name).disks[0]
        reader = hv.open_disk(disk)
        before = vcsim.sessions()
        rule = vcsim.set_fault(path=r"-flat\.vmdk$", kind="expire", bytes=MiB, count=1)
        got = b"".join(bytes(reader.read(off, MiB)) for off in range(0, 4 * MiB, MiB))
        reader.close()
        assert got == data
        after = vcsim.sessions()
        assert [r["hits"] for r in vcsim.faults() if r["id"] == rule["id"]] == [1]
        assert after["refused_http"] > before["refused_http"]  # a read met the 401
        assert hv.logins == 2
    finally:
        hv.close()


def test_task_wait_has_a_deadline(vcsim):
    name = new_vm(vcsim, [MiB])
    hv = driver(vcsim, task_timeout_s=0.3)
    try:
        vm = hv.find_vm(name)
        vcsim.set_fault(method="CreateSnapshot_Task", kind="hold", ms=2000, count=1)
        with pytest.raises(TaskDeadlineExceeded) as info:
            hv.create_snapshot(vm, "dpflow-slow", quiesce=False)
        assert isinstance(info.value, TransientError)
        assert info.value.task.startswith("task-")
        assert "task_timeout_s" in str(info.value)
        # the task was left to finish: it still ends, and its snapshot is there
        snap = hv.wait_task(info.value.task, "the slow snapshot", deadline_s=30)
        assert [s.name for s in hv.list_snapshots(vm)] == ["dpflow-slow"]
        assert snap is not None
    finally:
        for s in hv.list_snapshots(hv.find_vm(name)):
            hv.remove_snapshot(s)
        hv.close()


def test_call_timeout_is_not_the_connect_timeout(vcsim):
    name = new_vm(vcsim, [MiB])
    # a short connect timeout does not cut a slow call ...
    hv = driver(vcsim, connect_timeout_s=0.5, call_timeout_s=10)
    try:
        hv.find_vm(name)
        vcsim.set_fault(method="CreateContainerView", kind="delay", ms=1200, count=1)
        assert hv.find_vm(name).name == name
    finally:
        hv.close()
    # ... and a short call timeout cuts it, as a transient error
    hv = driver(vcsim, connect_timeout_s=10, call_timeout_s=0.4)
    try:
        hv.find_vm(name)
        rule = vcsim.set_fault(method="CreateContainerView", kind="delay", ms=1500, count=1)
        t0 = time.monotonic()
        with pytest.raises(TransientError, match="timed out|timeout"):
            hv.find_vm(name)
        assert time.monotonic() - t0 < 1.4
        assert [r["hits"] for r in vcsim.faults() if r["id"] == rule["id"]] == [1]
    finally:
        hv.close()


def test_upload_after_an_idle_expiry_logs_in_before_sending(vcsim):
    """A write's body cannot be sent twice: a session that ended while idle is renewed
    before the upload starts, so the PUT never meets a 401."""
    name = new_vm(vcsim, [MiB])
    hv = driver(vcsim)
    try:
        disk = hv.find_vm(name).disks[0]
        vcsim.expire_sessions()
        before = vcsim.sessions()
        payload = bytes(range(256)) * (MiB // 256)
        hv.write_disk(disk, [payload])
        after = vcsim.sessions()
        assert after["refused_http"] == before["refused_http"]
        assert after["refused_soap"] > before["refused_soap"]  # the check met the end
        assert hv.logins == 2
        with open(vcsim.current_disk_path(name, 0), "rb") as f:
            assert f.read(MiB) == payload
    finally:
        hv.close()


def test_reads_and_calls_outlast_a_service_restart(vcsim):
    """The service restarts after 1 MiB of reads: connections dropped for 1 s, every
    session gone. The reader retries through the outage and renews its cookie."""
    name = new_vm(vcsim, [4 * MiB])
    data = bytes(range(256)) * (4 * MiB // 256)
    vcsim.seed_disk(name, 0, data)
    hv = driver(vcsim)
    try:
        reader = hv.open_disk(hv.find_vm(name).disks[0])
        before = vcsim.sessions()
        rule = vcsim.set_fault(path=r"-flat\.vmdk$", kind="restart", bytes=MiB, ms=1000,
                               count=1)
        got = b"".join(bytes(reader.read(off, MiB)) for off in range(0, 4 * MiB, MiB))
        reader.close()
        assert got == data
        assert [r["hits"] for r in vcsim.faults() if r["id"] == rule["id"]] == [1]
        assert vcsim.sessions()["restarts"] == before["restarts"] + 1
        assert reader.failures >= 1  # the outage was met, and outlasted
        assert hv.find_vm(name).name == name and hv.logins == 2
    finally:
        hv.close()

"""Tests of the simulator itself (dpflow-vcsim), through pyVmomi and requests directly.

They pin down what dpflow's driver tests rely on: verified TLS, real bytes in sparse
-flat files, point-in-time snapshots with delta files, consolidation, and each kind
of injected fault as a client sees it.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator

import pytest
import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from simulators.vcsim import Vcsim

MiB = 1 << 20


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with Vcsim(cert_dir=tmp_path_factory.mktemp("certs")) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        s: Vcsim = request.getfixturevalue("sim")
        s.clear_faults()
        s.set_datastore_free(None)


def _get(sim: Vcsim, ds_path: str, **headers: str) -> requests.Response:
    return requests.get(sim.datastore_url(ds_path), headers=headers, verify=str(sim.ca_file),
                        timeout=30)


def _ds_path(sim: Vcsim, vm: str, index: int = 0) -> str:
    devices = sim.vm(vm).config.hardware.device
    disk = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    return disk[index].backing.fileName.replace(".vmdk", "-flat.vmdk")


def test_start_stop_removes_datastore(tmp_path) -> None:
    s = Vcsim(cert_dir=tmp_path / "certs")
    t = time.monotonic()
    s.start()
    assert time.monotonic() - t < 30
    assert s.running and s.url == f"https://127.0.0.1:{s.port}/sdk"
    ds = s.datastore_dir
    assert ds.is_dir()
    # the default model's VMs have 1 MiB sparse disks
    flats = list(ds.glob("*/*-flat.vmdk"))
    assert flats and all(f.stat().st_size == MiB for f in flats)
    s.stop()
    assert not s.running and not ds.exists()


def test_tls_verified_with_ca(sim: Vcsim) -> None:
    si = SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                      sslContext=sim.ssl_context())
    try:
        assert si.content.about.apiType == "VirtualCenter"
    finally:
        Disconnect(si)
    r = requests.get(f"{sim.base_url}/_fault", verify=str(sim.ca_file), timeout=10)
    assert r.status_code == 200
    # a client that does not trust our CA must fail verification
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sim.base_url}/_fault", verify=requests.certs.where(), timeout=10)


def test_wrong_password_is_invalid_login(sim: Vcsim) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd="wrong",
                     sslContext=sim.ssl_context())


def test_unset_property_reads_none(sim: Vcsim) -> None:
    sim.create_vm("unset-prop", [MiB])
    assert sim.vm("unset-prop").snapshot is None  # Fetch of an unset property


def test_disk_bytes_over_https_with_range(sim: Vcsim) -> None:
    sim.create_vm("seeded", [64 * MiB])
    flat = sim.current_disk_path("seeded", 0)
    assert flat.stat().st_size == 64 * MiB
    assert flat.stat().st_blocks * 512 < MiB  # sparse
    payload = os.urandom(64 * MiB)
    sim.seed_disk("seeded", 0, payload)
    path = _ds_path(sim, "seeded")
    r = _get(sim, path, Range="bytes=1048576-2097151")
    assert r.status_code == 206 and r.content == payload[MiB:2 * MiB]
    r = _get(sim, path)
    assert r.status_code == 200 and r.content == payload


def test_put_chunked_generator_overwrites(sim: Vcsim) -> None:
    sim.create_vm("put-target", [MiB])
    path = _ds_path(sim, "put-target")
    chunks = [bytes([i]) * 65536 for i in range(16)]
    r = requests.put(sim.datastore_url(path), data=iter(chunks), verify=str(sim.ca_file),
                     timeout=30)
    assert r.status_code == 200
    assert sim.current_disk_path("put-target", 0).read_bytes() == b"".join(chunks)


def test_snapshot_freezes_parent_and_remove_consolidates(sim: Vcsim) -> None:
    sim.create_vm("pit", [4 * MiB, 2 * MiB])
    base = os.urandom(4 * MiB)
    sim.seed_disk("pit", 0, base)
    vm = sim.vm("pit")
    WaitForTask(vm.CreateSnapshot_Task(name="backup", memory=False, quiesce=True))
    assert sim.snapshot_count("pit") == 1 and sim.snapshot_names("pit") == ["backup"]

    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert disks[0].backing.fileName == "[LocalDS_0] pit/pit-000001.vmdk"
    assert disks[0].backing.parent.fileName == "[LocalDS_0] pit/pit.vmdk"
    snap = vm.snapshot.rootSnapshotList[0].snapshot
    frozen = [d for d in snap.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert frozen[0].backing.fileName == "[LocalDS_0] pit/pit.vmdk"
    assert frozen[1].backing.fileName == "[LocalDS_0] pit/pit_1.vmdk"

    sim.guest_write("pit", 0, 4096, b"guest was here")
    assert sim.snapshot_disk_path("pit", "backup", 0).read_bytes() == base
    assert _get(sim, "[LocalDS_0] pit/pit-flat.vmdk").content == base
    live = sim.read_current_disk("pit", 0).read_bytes()
    assert live[4096:4110] == b"guest was here" and live[:4096] == base[:4096]

    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    assert sim.snapshot_count("pit") == 0
    assert sim.current_disk_path("pit", 0).name == "pit-flat.vmdk"
    assert sim.current_disk_path("pit", 0).read_bytes() == live
    assert not (sim.datastore_dir / "pit" / "pit-000001-flat.vmdk").exists()


def test_snapshot_chain_and_remove_all(sim: Vcsim) -> None:
    sim.create_vm("chain", [MiB])
    vm = sim.vm("chain")
    for i in (1, 2):
        sim.guest_write("chain", 0, 0, f"gen{i}".encode())
        WaitForTask(vm.CreateSnapshot_Task(name=f"s{i}", memory=False, quiesce=False))
    sim.guest_write("chain", 0, 0, b"gen3")
    assert sim.current_disk_path("chain", 0).name == "chain-000002-flat.vmdk"
    assert sim.snapshot_disk_path("chain", "s1", 0).read_bytes()[:4] == b"gen1"
    assert sim.snapshot_disk_path("chain", "s2", 0).read_bytes()[:4] == b"gen2"
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert sim.snapshot_count("chain") == 0
    assert sim.current_disk_path("chain", 0).name == "chain-flat.vmdk"
    assert sim.current_disk_path("chain", 0).read_bytes()[:4] == b"gen3"
    assert sorted(p.name for p in (sim.datastore_dir / "chain").glob("*.vmdk")) == [
        "chain-flat.vmdk", "chain.vmdk"]


@pytest.mark.slow
def test_snapshot_of_sparse_1gib_disk_is_fast(sim: Vcsim) -> None:
    sim.create_vm("big", [1 << 30])
    sim.guest_write("big", 0, 700 * MiB, b"x" * MiB)
    t = time.monotonic()
    WaitForTask(sim.vm("big").CreateSnapshot_Task(name="s", memory=False, quiesce=False))
    assert time.monotonic() - t < 5
    delta = sim.current_disk_path("big", 0)
    assert delta.stat().st_size == 1 << 30 and delta.stat().st_blocks * 512 < 16 * MiB
    WaitForTask(sim.vm("big").Destroy_Task())
    assert not sim.vm_exists("big") and not (sim.datastore_dir / "big").exists()


def test_task_fault(sim: Vcsim) -> None:
    sim.create_vm("quiesce", [MiB])
    sim.set_fault(method="CreateSnapshot_Task", kind="task", fault="ApplicationQuiesceFault",
                  message="VSS writer timed out", count=1)
    vm = sim.vm("quiesce")
    with pytest.raises(vim.fault.ApplicationQuiesceFault) as err:
        WaitForTask(vm.CreateSnapshot_Task(name="q", memory=False, quiesce=True))
    assert err.value.msg == "VSS writer timed out"
    assert sim.snapshot_count("quiesce") == 0
    WaitForTask(vm.CreateSnapshot_Task(name="q", memory=False, quiesce=True))  # count=1
    assert sim.snapshot_count("quiesce") == 1
    assert [r["hits"] for r in sim.faults()] == [1]


def test_soap_http_drop_delay_faults(sim: Vcsim) -> None:
    si = sim.si()
    pc = si.content.propertyCollector
    spec = vim.PropertyCollector.FilterSpec(
        objectSet=[vim.PropertyCollector.ObjectSpec(obj=si.content.rootFolder)],
        propSet=[vim.PropertyCollector.PropertySpec(type=vim.Folder, pathSet=["name"])],
    )
    sim.set_fault(method="RetrieveProperties", kind="soap", fault="NotAuthenticated", count=1)
    with pytest.raises(vim.fault.NotAuthenticated):
        pc.RetrieveProperties([spec])
    sim.set_fault(method="RetrieveProperties", kind="http", status=503, count=1)
    with pytest.raises(http.client.HTTPException):
        pc.RetrieveProperties([spec])
    sim.set_fault(method="RetrieveProperties", kind="drop", count=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        pc.RetrieveProperties([spec])
    sim.set_fault(method="RetrieveProperties", kind="delay", ms=300, count=1)
    t = time.monotonic()
    assert pc.RetrieveProperties([spec])[0].propSet[0].val == "Datacenters"
    assert time.monotonic() - t >= 0.3
    assert [r["hits"] for r in sim.faults()] == [1, 1, 1, 1]
    assert not any(r["active"] for r in sim.faults())


def test_datastore_http_faults(sim: Vcsim) -> None:
    sim.create_vm("dsfault", [MiB])
    sim.seed_disk("dsfault", 0, os.urandom(MiB))
    path = _ds_path(sim, "dsfault")
    sim.set_fault(path=r"/folder/dsfault/.*-flat\.vmdk", kind="http", status=503, count=1)
    assert _get(sim, path).status_code == 503
    sim.set_fault(path=r"/folder/dsfault/", kind="drop_after", bytes=4096, count=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _get(sim, path)
    sim.set_fault(path=r"/folder/dsfault/", kind="drop", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        _get(sim, path)
    assert _get(sim, path).content == sim.current_disk_path("dsfault", 0).read_bytes()


def test_bad_rule_rejected(sim: Vcsim) -> None:
    from simulators.vcsim import VcsimError

    with pytest.raises(VcsimError, match="unknown vim25 fault"):
        sim.set_fault(method="CreateSnapshot_Task", kind="task", fault="NoSuchFault")


def test_free_space_override(sim: Vcsim) -> None:
    ds = sim.si().content.rootFolder.childEntity[0].datastore[0]
    ds.RefreshDatastore()  # empty 200 repaired
    real = ds.summary.freeSpace
    assert real > 0
    sim.set_datastore_free(10 * MiB)
    assert ds.summary.freeSpace == 10 * MiB
    ds.RefreshDatastore()
    assert ds.summary.freeSpace == 10 * MiB and ds.info.freeSpace == 10 * MiB
    sim.set_datastore_free(None)
    ds.RefreshDatastore()
    assert ds.summary.freeSpace != 10 * MiB


def test_faults_loaded_at_start(tmp_path) -> None:
    rule = {"method": "CreateSnapshot_Task", "kind": "task", "fault": "SnapshotFault"}
    with Vcsim(cert_dir=tmp_path / "certs", faults=[rule], vms_per_pool=1) as s:
        s.create_vm("f", [MiB])
        with pytest.raises(vim.fault.SnapshotFault):
            WaitForTask(s.vm("f").CreateSnapshot_Task(name="x", memory=False, quiesce=False))
        assert s.faults()[0]["active"]


def test_certs_reused_and_strong(tmp_path) -> None:
    from cryptography import x509

    from simulators.tls import ensure_certs

    first = ensure_certs(tmp_path)
    mtime = first.cert_file.stat().st_mtime_ns
    again = ensure_certs(tmp_path)
    assert again == first and again.cert_file.stat().st_mtime_ns == mtime
    cert = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    assert cert.public_key().key_size == 2048
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    first.cert_file.write_text("garbage")
    assert ensure_certs(tmp_path).cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE")


def test_clone_copies_content_and_keeps_source(sim: Vcsim) -> None:
    sim.create_vm("clone-src", [MiB])
    sim.seed_disk("clone-src", 0, b"source bytes")
    vm = sim.vm("clone-src")
    WaitForTask(vm.CreateSnapshot_Task(name="s", memory=False, quiesce=False))
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vm.resourcePool))
    WaitForTask(vm.CloneVM_Task(folder=vm.parent, name="clone-dst", spec=spec))
    # stock vcsim blanked the source's disk file names here
    assert sim.current_disk_path("clone-src", 0).name == "clone-src-000001-flat.vmdk"
    assert sim.current_disk_path("clone-dst", 0).read_bytes()[:12] == b"source bytes"


def test_snapshot_delta_holds_only_what_the_guest_writes(sim: Vcsim) -> None:
    """Copy-on-write: the delta starts empty and grows by the blocks written; its holes
    read through to the frozen file; removing the snapshot folds it into the base."""
    sim.create_vm("cow", [8 * MiB])
    base = os.urandom(8 * MiB)
    sim.seed_disk("cow", 0, base)
    sim.create_snapshot("cow", "s")
    delta = sim.current_disk_path("cow", 0)
    assert delta.stat().st_size == 8 * MiB and delta.stat().st_blocks == 0
    sim.guest_write("cow", 0, 4096 + 100, b"guest")  # inside one 4 KiB block
    assert delta.stat().st_blocks * 512 == 4096
    assert sim.snapshot_disk_path("cow", "s", 0).read_bytes() == base
    live = base[:4196] + b"guest" + base[4201:]
    assert sim.read_current_disk("cow", 0).read_bytes() == live
    sim.remove_snapshot("cow", "s")
    assert sim.current_disk_path("cow", 0).name == "cow-flat.vmdk"
    assert sim.current_disk_path("cow", 0).read_bytes() == live
    assert not delta.exists()


def test_delta_write_across_two_blocks_folds_into_base(sim: Vcsim) -> None:
    sim.create_vm("fold", [4 * MiB])
    base = os.urandom(4 * MiB)
    sim.seed_disk("fold", 0, base)
    sim.create_snapshot("fold", "s")
    sim.guest_write("fold", 0, MiB - 10, b"x" * 20)  # across a block boundary
    assert sim.current_disk_path("fold", 0).stat().st_blocks * 512 == 8192
    sim.remove_snapshot("fold", "s")
    assert sim.current_disk_path("fold", 0).read_bytes() == (
        base[:MiB - 10] + b"x" * 20 + base[MiB + 10:])

"""Steps of a restore test: the version read back, booted in an isolated lab, checked.

Each check step returns Check records (dpflow.proofs) instead of raising: a restore test
that finds a fault has done its job, and the proof says what failed. Errors of the lab
itself (the lab network cannot be made, the test VM cannot be created) do raise; the
flow turns them into a failed check too, after its cleanup.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

from prefect import get_run_logger

from dpflow.environment import Environment
from dpflow.errors import first_line
from dpflow.guestfs import GuestVolume, RangeFile, discover, split_path
from dpflow.proofs import Check
from dpflow.store.chunks import CorruptChunk
from dpflow.store.manifest import VersionManifest
from dpflow.transports import open_reader
from drivers.protocols import DiskInfo, VmInfo
from drivers.vsphere_lab import IsolatedLab
from tasks.common import step
from tasks.vsphere import reap_orphan_vms, restore_marker

TEST_VM_INFIX = "-dpflow-test-"


def test_vm_name(vm: str, session_id: str) -> str:
    return f"{vm}{TEST_VM_INFIX}{session_id[:8]}"


@step(name="read every chunk of the version")
def scan_chunks(env: Environment, store: str, manifest: VersionManifest) -> Check:
    """Every chunk read, decrypted and re-hashed; the damaged ones named."""
    st = env.store(store)
    ids = sorted({c for d in manifest.disks for c in d.chunks if c is not None})

    def one(cid: str) -> str | None:
        try:
            st.get(cid)
            return None
        except CorruptChunk as exc:
            return first_line(exc)
    with ThreadPoolExecutor(max_workers=env.dc.proxies[0].workers) as pool:
        bad = [(cid, why) for cid, why in zip(ids, pool.map(one, ids), strict=True) if why]
    if bad:
        named = "; ".join(why if cid in why else f"{cid}: {why}" for cid, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        return Check(name="chunks", status="failed",
                     detail=f"{len(bad)} of {len(ids)} chunks damaged: {named}{more}")
    return Check(name="chunks", status="passed",
                 detail=f"{len(ids)} chunks of {len(manifest.disks)} disk(s) read, decrypted "
                        f"and re-hashed")


@step(name="prepare isolated lab")
def prepare_lab(env: Environment, vcenter: str) -> str:
    """The lab host, with the isolated port group on it (made if missing)."""
    policy = env.dc.restore_tests
    lab = IsolatedLab(env.hypervisor(vcenter))
    host = lab.host_name(policy.host)
    if lab.ensure_network(host, policy.network, policy.switch):
        get_run_logger().info("made port group %s on vSwitch %s (no uplinks) on host %s",
                              policy.network, policy.switch, host)
    return host


@step(name="create test VM")
def create_test_vm(env: Environment, vcenter: str, source: VmInfo, name: str, session_id: str,
                   host: str) -> VmInfo:
    """A new VM with the version's hardware, its one NIC on the isolated port group, marked
    with the session (so a dead run's test VM is found and destroyed)."""
    reap_orphan_vms(env, vcenter)
    return env.hypervisor(vcenter).create_vm(source, name, restore_marker(session_id),
                                             network=env.dc.restore_tests.network, host=host)


@step(name="check isolation")
def check_isolation(env: Environment, vcenter: str, vm: VmInfo, host: str) -> Check:
    policy = env.dc.restore_tests
    nets = IsolatedLab(env.hypervisor(vcenter)).networks(vm)
    if nets != [policy.network]:
        return Check(name="isolation", status="failed",
                     detail=f"test VM NICs on {nets}, not only on {policy.network}")
    return Check(name="isolation", status="passed",
                 detail=f"one NIC, on port group {policy.network} (vSwitch {policy.switch}, no "
                        f"uplinks) on host {host}")


def _volumes(env: Environment, vcenter: str, disks: list[DiskInfo]
             ) -> tuple[list[GuestVolume], list[str], list[str]]:
    vols: list[GuestVolume] = []
    seen: list[str] = []
    bad: list[str] = []
    for i, disk in enumerate(disks):
        reader, _, _ = open_reader(env, vcenter, disk)
        dev = RangeFile(reader, disk.capacity_bytes, block=64 << 10, cache_blocks=64)
        for report, vol in discover(dev, disk.capacity_bytes, i):
            if vol is None:
                if report.error.startswith(("damaged", "unreadable", "partition lies")):
                    bad.append(f"{report.name}: {report.error}")
                continue
            listed = sum(1 for _ in vol.walk(lambda p, _d: p.count("/") <= 2))
            if vol.problems:
                bad.append(f"{vol.name}: {vol.problems[0]}")
            else:
                seen.append(f"{vol.name} {vol.fs_type} ({listed} entries in its top two "
                            f"levels)")
            vols.append(vol)
    return vols, seen, bad


def _file_check(vols: list[GuestVolume], path: str, want: str | None) -> str | None:
    """None when `path` is there (with digest `want`), else why not."""
    volume, _, inner = path.rpartition(":") if ":" in path else ("", "", path)
    for vol in vols:
        if volume and vol.name != volume:
            continue
        try:
            entry = vol.lookup(split_path(inner))
        except FileNotFoundError:
            continue
        if want is None:
            return None
        h = hashlib.sha256()
        with vol.open(entry) as f:
            while block := f.read(1 << 20):
                h.update(block)
        return None if h.hexdigest() == want else (
            f"{path}: SHA-256 {h.hexdigest()[:16]}..., the check spec says {want[:16]}...")
    return f"{path}: not found on {'volume ' + volume if volume else 'any volume'}"


@step(name="read guest file systems")
def check_guest_files(env: Environment, vcenter: str, vm: str, disks: list[DiskInfo]
                      ) -> list[Check]:
    """The restored disks' file systems parsed (dissect, not mounted), and the files of
    the VM's check spec found there with their digests."""
    vols, seen, bad = _volumes(env, vcenter, disks)
    if bad or not seen:
        fs = Check(name="guest file systems", status="failed",
                   detail="; ".join(bad) or "no readable guest file system on any disk")
    else:
        fs = Check(name="guest file systems", status="passed", detail="; ".join(seen))
    out = [fs]
    spec = env.dc.restore_tests.for_vm(vm).files
    if spec:
        missing = [why for p, d in spec.items() if (why := _file_check(vols, p, d))]
        out.append(Check(name="files", status="failed" if missing else "passed",
                         detail="; ".join(missing) if missing else
                         f"{len(spec)} file(s) present, "
                         f"{sum(d is not None for d in spec.values())} with matching SHA-256"))
    return out


@step(name="wait for guest heartbeat", retries=0)
def wait_heartbeat(env: Environment, vcenter: str, vm: VmInfo) -> Check:
    """Poll the guest heartbeat until green (VMware Tools running) or the timeout."""
    timeout = env.dc.restore_tests.heartbeat_timeout_s
    lab = IsolatedLab(env.hypervisor(vcenter))
    t0 = time.monotonic()
    while True:
        beat, tools = lab.heartbeat(vm)
        waited = time.monotonic() - t0
        if beat == "green" and tools == "guestToolsRunning":
            return Check(name="heartbeat", status="passed",
                         detail=f"guest heartbeat green, VMware Tools running, "
                                f"{waited:.1f}s after power-on")
        if waited >= timeout:
            return Check(name="heartbeat", status="failed",
                         detail=f"no guest heartbeat within {timeout:g}s (heartbeat {beat}, "
                                f"tools {tools or 'unknown'})")
        time.sleep(min(1.0, max(0.1, timeout - waited)))

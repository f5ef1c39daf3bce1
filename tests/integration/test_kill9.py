"""kill -9 of backup processes mid-copy: the store stays sound, the catalog holds no half
version, and the next backup succeeds and reuses the chunks already made durable."""

from __future__ import annotations

import contextvars
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pyVim.task import WaitForTask

from dpflow.environment import environment
from simulators.guest_disks import MiB
from tests.integration.kill9_luns import LunRestoreKills, start_eva
from tests.integration.test_vm_image import disk_bytes

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def start_backup(cfg: str, vm: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    code = f"from flows.vm_image import backup_vm_image; backup_vm_image({cfg!r}, {vm!r})"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value()))


def test_kill_minus_nine_at_random_points(vcsim, dc_config, tmp_path):
    from flows.maintenance import verify_media
    from flows.vm_image import backup_vm_image, restore_vm_image

    conf = yaml.safe_load(dc_config.read_text())
    conf["stores"][0]["pack_size_mib"] = 2  # packs become durable during the copy
    dc_config.write_text(yaml.safe_dump(conf))
    cfg = str(dc_config)
    store = environment(cfg).store(create=True)
    seed = int(os.environ.get("DPFLOW_TEST_SEED", time.time()))
    print(f"kill -9 campaign seed: {seed} (replay: DPFLOW_TEST_SEED={seed})")
    rng = random.Random(seed)
    vms = []
    vcsim.set_fault(path=r"-flat\.vmdk$", kind="delay", ms=400, count=0)  # ~2 s per copy
    try:
        for i in range(3):
            vm = f"k9-{i}-{os.getpid()}"
            vcsim.create_vm(vm, [80 * MiB])
            vcsim.seed_disk(vm, 0, os.urandom(80 * MiB))  # incompressible: packs fill fast
            packs_before = len(list(store.packs_dir.rglob("*.pack")))
            p = start_backup(cfg, vm)
            deadline = time.monotonic() + 120
            while len(list(store.packs_dir.rglob("*.pack"))) == packs_before:
                assert p.poll() is None, "backup ended before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.6))  # somewhere after the first durable pack
            p.send_signal(signal.SIGKILL)
            p.wait()
            vms.append(vm)
    finally:
        vcsim.clear_faults()

    cat = environment(cfg).catalog()
    assert [len(cat.versions(vm)) for vm in vms] == [0, 0, 0]  # no half version
    assert verify_media(cfg, read_percent=100).ok
    assert any(vcsim.snapshot_count(vm) for vm in vms)  # the killed sessions left snapshots

    results = {}

    def again(vm: str) -> None:  # waits out the killed session's lease (≤ 60 s)
        results[vm] = backup_vm_image(cfg, vm)

    assert side_by_side(*[functools.partial(again, vm) for vm in vms]) == []
    for vm in vms:
        r = results[vm]
        assert r.status == "completed" and vcsim.snapshot_count(vm) == 0
        assert r.bytes_added < 80 * MiB  # chunks made durable before the kill were reused
    # the killed sessions were closed as aborted (each by the next backup that started:
    # the later killed ones closed the earlier), their temporary packs removed, and said so
    from sqlalchemy import select

    from dpflow.catalog import ObjectRow, SessionRow

    with cat.session() as db:
        states = sorted(db.execute(select(ObjectRow.name, SessionRow.status, SessionRow.message)
                                   .join(SessionRow.object).where(ObjectRow.name.in_(vms))))
    aborted = [(name, msg) for name, status, msg in states if status == "aborted"]
    assert [name for name, _ in aborted] == vms and all("is gone" in m for _, m in aborted)
    assert not [row for row in cat.running_sessions() if row.object.name in vms]
    assert list(store.tmp_dir.glob("*.pack.tmp")) == []
    cleaned = [line for vm in vms for line in results[vm].leftovers]
    assert any(line.startswith("closed as aborted") for line in cleaned), cleaned
    assert verify_media(cfg, read_percent=100).ok
    restore_vm_image(cfg, vms[0], results[vms[0]].version_id, as_name=f"{vms[0]}-r")
    assert disk_bytes(vcsim, f"{vms[0]}-r", 0, 80 * MiB) == disk_bytes(vcsim, vms[0], 0,
                                                                          80 * MiB)


def side_by_side(*fns: Callable[[], None]) -> list[BaseException]:
    """Run fns in threads (each in a copy of this context: the test server's Prefect
    settings go along); the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(guarded, fn))
               for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def run_cli(cfg: str, *args: str) -> subprocess.Popen:
    """The real `dpflow` command in its own process (killable)."""
    from prefect.settings import PREFECT_API_URL

    return subprocess.Popen([sys.executable, "-m", "dpflow_cli", *args, "-c", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value()))


def kills() -> tuple[random.Random, int]:
    seed = int(os.environ.get("DPFLOW_TEST_SEED", time.time()))
    n = 3 if os.environ.get("DPFLOW_CAMPAIGN") == "full" else 1
    print(f"kill -9 campaign seed: {seed} (replay: DPFLOW_TEST_SEED={seed}), {n} kill(s)")
    return random.Random(seed), n


def assert_store_sound(cfg: str) -> None:
    from dpflow.catalog_refs import catalog_refs, catalogued_in_store
    from dpflow.store.maintenance import verify

    env = environment(cfg)
    cat, store = env.catalog(), env.store()
    report = verify(store, catalogued_in_store(cat, "library"), read_percent=100,
                    extra=catalog_refs(cat, "library"))
    assert report.ok and report.versions, (report.unrestorable, report.damaged)
    assert report.uncatalogued == []


def test_kill_minus_nine_of_restore(vcsim, dc_config, tmp_path, monkeypatch):
    """`dpflow restore vm` killed while it writes or verifies the new VM's disk: the store
    stays sound; the next restore closes the dead session as aborted and destroys the VM it
    had half-created (reported); the re-run restore is bit for bit the source. And `dpflow
    restore luns --detach-hosts` killed in one of its array steps (kill9_luns.py): after
    the next run nothing is left presented, the hosts' LUNs are where they were, the
    killed session is closed as aborted and the LUNs are bit for bit the replica's. The
    two re-runs wait out their killed sessions' leases side by side."""
    from sqlalchemy import select

    from dpflow.catalog import ObjectRow, SessionRow
    from flows.vm_image import backup_vm_image, restore_vm_image

    cfg = str(dc_config)
    rng, n = kills()
    vm = f"k9r-{os.getpid()}-{rng.randrange(1 << 30):x}"
    vcsim.create_vm(vm, [24 * MiB])
    vcsim.seed_disk(vm, 0, os.urandom(24 * MiB))
    source = disk_bytes(vcsim, vm, 0, 24 * MiB)
    version = backup_vm_image(cfg, vm).version_id
    killed = []
    vcsim.set_fault(path=r"-flat\.vmdk$", verb="PUT", kind="delay", ms=2500, count=0)
    vcsim.set_fault(path=r"-flat\.vmdk$", verb="GET", kind="delay", ms=150, count=0)
    try:
        for i in range(n):
            target = f"{vm}-k{i}"
            p = run_cli(cfg, "restore", "vm", vm, "--version", version, "--as", target)
            deadline = time.monotonic() + 180
            while not vcsim.vm_exists(target):  # the VM is made: its disk is being written
                assert p.poll() is None, "restore ended before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.5))  # while writing (2.5 s) or verifying
            assert p.poll() is None, "restore ended before it could be killed"
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed.append(target)
    finally:
        vcsim.clear_faults()
    assert_store_sound(cfg)
    assert all(vcsim.vm_exists(t) for t in killed)  # half-created VMs, for now

    with start_eva(tmp_path / "eva") as eva:
        monkeypatch.setenv("DPFLOW_TEST_EVA_PASSWORD", eva.password)
        luns = LunRestoreKills(eva, tmp_path / "luns", rng, n, run_cli)
        try:
            out: dict[str, Any] = {}

            def rerun_vm() -> None:
                out["vm"] = restore_vm_image(cfg, vm, version, as_name=f"{vm}-again")

            errors = side_by_side(rerun_vm, luns.rerun)
            assert errors == [], errors
            luns.check()
        finally:
            luns.close()
    rr = out["vm"]
    assert rr.verified and disk_bytes(vcsim, f"{vm}-again", 0, 24 * MiB) == source
    assert not any(vcsim.vm_exists(t) for t in killed)  # the reaper destroyed them
    cat = environment(cfg).catalog()
    with cat.session() as db:
        rows = list(db.execute(select(ObjectRow.name, SessionRow.kind, SessionRow.status,
                                      SessionRow.message).join(SessionRow.object)
                               .where(ObjectRow.name.in_(killed))))
    states = sorted((name, kind, status) for name, kind, status, _ in rows)
    assert states == sorted([(t, "restore-image", "aborted") for t in killed]
                            + [(t, "reap-vm", "completed") for t in killed]), states
    assert not [s for s in cat.running_sessions() if s.object.name in killed]
    WaitForTask(vcsim.vm(f"{vm}-again").Destroy_Task())


def test_kill_minus_nine_of_prune(vcsim, dc_config, tmp_path):
    """`dpflow prune --apply` killed at a random moment of its life: every catalogued
    version stays restorable, the next prune finishes the job (no pack file left that
    the index does not name, no temporary pack), and a restore is bit for bit."""
    from dpflow.image_file import restore_disk_file
    from dpflow.retention import KeepPolicy
    from dpflow.store.manifest import read_manifest
    from flows.maintenance import forget_versions, prune_media
    from flows.vm_image import backup_vm_image

    conf = yaml.safe_load(dc_config.read_text())
    conf["stores"][0]["pack_size_mib"] = 1  # many packs for prune to delete
    dc_config.write_text(yaml.safe_dump(conf))
    cfg = str(dc_config)
    rng, n = kills()
    vm = f"k9p-{os.getpid()}-{rng.randrange(1 << 30):x}"
    vcsim.create_vm(vm, [16 * MiB])
    life = 0.0
    for _ in range(n):
        for _ in range(2):  # a version to keep, one to forget: its packs are prune's work
            vcsim.seed_disk(vm, 0, os.urandom(16 * MiB))
            kept = disk_bytes(vcsim, vm, 0, 16 * MiB)
            backup_vm_image(cfg, vm)
        forget_versions(cfg, KeepPolicy(last=1), vm=vm, apply=True)
        if not life:
            t0 = time.monotonic()
            assert run_cli(cfg, "prune").wait() == 0  # dry: how long the command lives here
            life = time.monotonic() - t0
        p = run_cli(cfg, "prune", "--apply")
        time.sleep(rng.uniform(0.5, 1.1) * life)  # anywhere from start-up to the deletions
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        print(f"prune {'killed' if p.wait() < 0 else 'ended'} (exit {p.returncode})")
        assert_store_sound(cfg)
    report = prune_media(cfg, apply=True)
    assert report.deferred_by == []
    store = environment(cfg).store()  # the flow closed the one it used
    on_disk = {f.stem for f in store.packs_dir.rglob("*.pack")}
    indexed = {pack for _, pack, *_ in store.index.entries()}
    assert on_disk == indexed, f"pack files the index does not name: {on_disk - indexed}"
    assert list(store.tmp_dir.glob("*.pack.tmp")) == []
    assert_store_sound(cfg)
    row = environment(cfg).catalog().latest_version(vm)
    (disk,) = read_manifest(store, row.id).disks
    restore_disk_file(store, disk, tmp_path / "d0.img", workers=2)
    assert (tmp_path / "d0.img").read_bytes()[:16 * MiB] == kept

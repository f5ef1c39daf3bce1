"""kill -9 of backup processes mid-copy: the store stays sound, the catalog holds no half
version, and the next backup succeeds and reuses the chunks already made durable."""

from __future__ import annotations

import contextvars
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from dpflow.environment import environment
from simulators.guest_disks import MiB
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

    # each thread in a copy of this context: the test server's Prefect settings go along
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(again, vm))
               for vm in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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

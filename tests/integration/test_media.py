"""Verify, forget and prune on a real store filled by real backups."""

from __future__ import annotations

import os

import pytest

from dpflow.environment import environment
from dpflow.retention import KeepPolicy
from dpflow.store.maintenance import StoreDamaged, register_backup, unregister_backup
from dpflow.store.manifest import delete_manifest
from dpflow.store.packs import pack_path
from simulators.guest_disks import MiB
from tests.integration.test_vm_image import disk_bytes, new_vm

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_forget_prune_verify_cycle(vcsim, dc_config, tmp_path):
    from flows.maintenance import forget_versions, prune_media, verify_media
    from flows.vm_image import backup_vm_image, restore_vm_image

    cfg = str(dc_config)
    a, (a_bytes,) = new_vm(vcsim, tmp_path, [6 * MiB])
    b, _ = new_vm(vcsim, tmp_path, [6 * MiB])
    vcsim.seed_disk(b, 0, os.urandom(6 * MiB))  # nothing in common with A
    ra = backup_vm_image(cfg, a)
    rb1 = backup_vm_image(cfg, b)
    vcsim.seed_disk(b, 0, os.urandom(6 * MiB))  # B rewritten completely
    b2 = disk_bytes(vcsim, b, 0, 6 * MiB)
    rb2 = backup_vm_image(cfg, b)
    environment(cfg).catalog().protect(ra.version_id, None)

    dry = forget_versions(cfg, KeepPolicy(last=1), vm=b)
    assert dry[f"vm:{b}"][rb1.version_id] == [] and dry[f"vm:{b}"][rb2.version_id]
    assert len(environment(cfg).catalog().versions(b)) == 2  # dry run forgot nothing

    forget_versions(cfg, KeepPolicy(last=1), vm=b, apply=True)
    assert [v.id for v in environment(cfg).catalog().versions(b)] == [rb2.version_id]
    r = prune_media(cfg, apply=True)
    assert r.packs_deleted >= 1 and r.bytes_freed > 3 * MiB
    assert verify_media(cfg, read_percent=100).ok
    restore_vm_image(cfg, a, ra.version_id, as_name=f"{a}-r")
    restore_vm_image(cfg, b, rb2.version_id, as_name=f"{b}-r")
    assert disk_bytes(vcsim, f"{a}-r", 0, 6 * MiB) == a_bytes
    assert disk_bytes(vcsim, f"{b}-r", 0, 6 * MiB) == b2


def test_protected_version_is_never_forgotten(vcsim, dc_config, tmp_path):
    from datetime import UTC, datetime, timedelta

    from flows.maintenance import forget_versions
    from flows.vm_image import backup_vm_image

    cfg = str(dc_config)
    vm, _ = new_vm(vcsim, tmp_path, [2 * MiB])
    first = backup_vm_image(cfg, vm)
    backup_vm_image(cfg, vm)
    environment(cfg).catalog().protect(first.version_id, datetime.now(UTC) + timedelta(days=7))
    forget_versions(cfg, KeepPolicy(last=1), vm=vm, apply=True)
    assert len(environment(cfg).catalog().versions(vm)) == 2


def test_prune_defers_while_a_backup_runs(vcsim, dc_config, tmp_path):
    from flows.maintenance import prune_media
    from flows.vm_image import backup_vm_image

    cfg = str(dc_config)
    vm, _ = new_vm(vcsim, tmp_path, [2 * MiB])
    backup_vm_image(cfg, vm)
    store = environment(cfg).store()
    packs_before = sorted(store.packs_dir.rglob("*.pack"))
    register_backup(store, "running-session")
    try:
        r = prune_media(cfg, apply=True)
        assert r.deferred_by == ["running-session"]
        assert sorted(store.packs_dir.rglob("*.pack")) == packs_before
    finally:
        unregister_backup(store, "running-session")


def test_verify_names_damaged_chunks_and_the_versions_they_break(vcsim, dc_config, tmp_path):
    from flows.maintenance import verify_media
    from flows.vm_image import backup_vm_image

    cfg = str(dc_config)
    vm, _ = new_vm(vcsim, tmp_path, [4 * MiB])
    r1 = backup_vm_image(cfg, vm)
    r2 = backup_vm_image(cfg, vm)  # unchanged: both versions share every chunk
    store = environment(cfg).store()
    cid, (pack, off, length) = next((c, (p, o, n)) for c, p, o, n, _ in store.index.entries())
    with open(pack_path(store.packs_dir, pack), "r+b") as f:
        f.seek(off + length // 2)
        f.write(b"\x00\x01\x02\x03")
    assert verify_media(cfg).ok  # metadata only: the chunk is there
    with pytest.raises(StoreDamaged) as info:
        verify_media(cfg, read_percent=100)
    report = info.value.report
    assert cid in report.damaged
    assert set(report.damaged[cid]) == {r1.version_id, r2.version_id}
    assert set(report.unrestorable) == {r1.version_id, r2.version_id}
    pack_path(store.packs_dir, pack).unlink()
    with pytest.raises(StoreDamaged):
        verify_media(cfg)


def test_verify_fails_by_name_for_a_catalogued_version_whose_manifest_is_gone(
        vcsim, dc_config, tmp_path):
    from flows.maintenance import verify_media
    from flows.vm_image import backup_vm_image

    cfg = str(dc_config)
    vm, _ = new_vm(vcsim, tmp_path, [2 * MiB])
    blank = f"vm-blank-{os.getpid()}-{tmp_path.name[-6:]}"
    vcsim.create_vm(blank, [2 * MiB])  # never written: all zeros, a version with no chunk
    kept = backup_vm_image(cfg, vm)
    gone = backup_vm_image(cfg, blank)
    assert verify_media(cfg).versions == 2  # the version without chunks counts too
    delete_manifest(environment(cfg).store(), gone.version_id)
    with pytest.raises(StoreDamaged) as info:
        verify_media(cfg, read_percent=100)
    assert info.value.report.unrestorable == {
        gone.version_id: "its manifest is missing from the store"}
    assert kept.version_id not in info.value.report.unrestorable


def test_restore_touching_a_damaged_chunk_leaves_no_half_written_target(vcsim, dc_config,
                                                                        tmp_path):
    from dpflow.store import CorruptChunk
    from flows.vm_image import backup_vm_image, restore_vm_image

    cfg = str(dc_config)
    vm, (data,) = new_vm(vcsim, tmp_path, [4 * MiB])
    r = backup_vm_image(cfg, vm)
    store = environment(cfg).store()
    cid, (pack, off, length) = next((c, (p, o, n)) for c, p, o, n, _ in store.index.entries())
    with open(pack_path(store.packs_dir, pack), "r+b") as f:
        f.seek(off + length - 3)
        f.write(b"\xff\xfe\xfd")
    with pytest.raises(CorruptChunk, match=cid):
        restore_vm_image(cfg, vm, r.version_id, as_name=f"{vm}-new")
    assert not vcsim.vm_exists(f"{vm}-new")  # the half-restored VM was destroyed
    vcsim.guest_write(vm, 0, 0, b"live data the failed restore must not touch")
    live = disk_bytes(vcsim, vm, 0, 4 * MiB)
    with pytest.raises(CorruptChunk, match=cid):
        restore_vm_image(cfg, vm, r.version_id)  # in place: refused before any write
    assert disk_bytes(vcsim, vm, 0, 4 * MiB) == live

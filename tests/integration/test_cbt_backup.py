"""CBT incrementals through the real driver: only changes read, every version a full map,
and every reason CBT cannot be trusted turns into a recorded full read, never a gap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dpflow.environment import environment
from tests.integration.test_vm_image import disk_bytes, new_vm

pytestmark = pytest.mark.usefixtures("prefect_server")
KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture(autouse=True)
def _clean(vcsim):
    vcsim.clear_faults()
    vcsim.corrupt_cbt(None)
    yield
    vcsim.clear_faults()
    vcsim.corrupt_cbt(None)
    vcsim.set_cbt_page_limit(64)


def note(cfg: Path, version_id: str) -> str:
    return environment(cfg).catalog().version(version_id).note


def write_blocks(vcsim, vm: str, offsets: list[int]) -> None:
    for off in offsets:
        vcsim.guest_write(vm, 0, off, os.urandom(64 * KiB))


def restore_and_compare(cfg: Path, vcsim, vm: str, version: str, expected: bytes) -> None:
    from flows.vm_image import restore_vm_image

    target = f"{vm}-{version[:6]}"
    restore_vm_image(str(cfg), vm, version, as_name=target)
    assert disk_bytes(vcsim, target, 0, len(expected)) == expected


def test_incremental_reads_only_changes_and_restores_both_days(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, (day1,) = new_vm(vcsim, tmp_path, [16 * MiB])
    r1 = backup_vm_image(str(dc_config), vm)
    assert "full" in note(dc_config, r1.version_id)
    assert r1.bytes_read < 16 * MiB  # allocated areas only: the zero tail is never read
    write_blocks(vcsim, vm, [64 * KiB * i for i in (3, 50, 51, 200)])
    day2 = disk_bytes(vcsim, vm, 0, 16 * MiB)
    r2 = backup_vm_image(str(dc_config), vm)
    assert "incremental (CBT) 1/1" in note(dc_config, r2.version_id)
    assert r2.bytes_read == 4 * 64 * KiB
    restore_and_compare(dc_config, vcsim, vm, r2.version_id, day2)
    restore_and_compare(dc_config, vcsim, vm, r1.version_id, day1)


def test_paging_to_the_end_with_small_pages(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [16 * MiB])
    backup_vm_image(str(dc_config), vm)
    vcsim.set_cbt_page_limit(2)
    write_blocks(vcsim, vm, [64 * KiB * i for i in range(1, 250, 7)])  # 36 separate areas
    day2 = disk_bytes(vcsim, vm, 0, 16 * MiB)
    r2 = backup_vm_image(str(dc_config), vm)
    assert r2.bytes_read == 36 * 64 * KiB
    restore_and_compare(dc_config, vcsim, vm, r2.version_id, day2)


@pytest.mark.parametrize("case", ["reset", "resized", "query-fault"])
def test_untrustworthy_cbt_gives_a_recorded_full(vcsim, dc_config, tmp_path, case):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [8 * MiB])
    backup_vm_image(str(dc_config), vm)
    write_blocks(vcsim, vm, [64 * KiB * 5])
    if case == "reset":
        vcsim.disable_cbt(vm)
        vcsim.enable_cbt(vm)
        words = "CBT cannot answer"
    elif case == "resized":
        vcsim.resize_disk(vm, 0, 12 * MiB)
        words = "disk resized"
    else:
        vcsim.set_fault(method="QueryChangedDiskAreas", kind="soap", fault="FileFault", count=1)
        words = "CBT cannot answer"
    size = 12 * MiB if case == "resized" else 8 * MiB
    now = disk_bytes(vcsim, vm, 0, size)
    r2 = backup_vm_image(str(dc_config), vm)
    n = note(dc_config, r2.version_id)
    assert "full" in n and words in n, n
    restore_and_compare(dc_config, vcsim, vm, r2.version_id, now)


def test_transient_cbt_fault_is_retried(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    vm, _ = new_vm(vcsim, tmp_path, [8 * MiB])
    backup_vm_image(str(dc_config), vm)
    write_blocks(vcsim, vm, [64 * KiB * 9])
    vcsim.set_fault(method="QueryChangedDiskAreas", kind="http", status=503, count=1)
    r2 = backup_vm_image(str(dc_config), vm)
    assert "incremental" in note(dc_config, r2.version_id)


def test_sampled_verification_catches_a_missing_area(vcsim, dc_config, tmp_path):
    from flows.vm_image import backup_vm_image

    dc_config.write_text(dc_config.read_text() + "change_tracking: {verify_samples: 100000}\n")
    vm, _ = new_vm(vcsim, tmp_path, [8 * MiB])
    backup_vm_image(str(dc_config), vm)
    write_blocks(vcsim, vm, [64 * KiB * 7, 64 * KiB * 90])
    vcsim.corrupt_cbt(0)  # the simulator now silently omits the first changed area
    day2 = disk_bytes(vcsim, vm, 0, 8 * MiB)
    r2 = backup_vm_image(str(dc_config), vm)
    assert "inconsistent" in note(dc_config, r2.version_id)
    restore_and_compare(dc_config, vcsim, vm, r2.version_id, day2)

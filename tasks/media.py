"""Media steps: disks into the store, versions committed, disks back out and verified."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import get_run_logger
from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import PermanentError
from dpflow.progress import meter
from dpflow.store import DiskManifest, VersionManifest
from dpflow.store.manifest import read_manifest, write_manifest
from dpflow.store.pipeline import backup_disk as copy_disk_to_store
from dpflow.store.pipeline import restore_blocks, verify_disk
from dpflow.transports import open_reader
from dpflow.transports import write_disk as write_target_disk
from drivers.protocols import DiskInfo, SnapshotRef, VmInfo
from tasks.cbt_plan import ReadPlan, plan_read, sample_unchanged
from tasks.common import step


class DiskCopy(BaseModel):
    manifest: DiskManifest
    bytes_read: int
    bytes_added: int
    seconds: float
    chunks_read: int
    transport: str = "network"

    @property
    def incremental(self) -> bool:
        return self.manifest.full_reason is None


@step(name="back up disk", retries=2, delay=2.0)
def backup_disk(env: Environment, vcenter: str, vm: str, snap: SnapshotRef, disk: DiskInfo,
                store: str | None, previous_version: str | None) -> DiskCopy:
    """One frozen snapshot disk into the store: only what CBT says changed, when it can be
    trusted. A retry re-reads; chunks already stored are kept."""
    s = env.dc.store(store)
    st = env.store(store)
    hv = env.hypervisor(vcenter)
    log = get_run_logger()
    prev = None
    if previous_version and env.dc.change_tracking.enabled:
        prev = next((d for d in read_manifest(st, previous_version).disks if d.key == disk.key),
                    None)
    cbt_disk = disk if env.dc.change_tracking.enabled else disk.model_copy(
        update={"change_id": None})
    plan = plan_read(hv, snap, cbt_disk, prev, s.chunk_size)
    reader, transport, passed = open_reader(env, vcenter, disk)
    for why in passed:
        log.warning("%s %s: %s; reading it by %s", vm, disk.label, why, transport)
    try:
        bad = sample_unchanged(reader, plan, st.chunk_id, s.chunk_size,
                               env.dc.change_tracking.verify_samples)
        if bad:
            log.error("CBT answer for %s %s is wrong: %d sampled unchanged chunk(s) changed "
                      "(first at byte %d); reading the whole disk", vm, disk.label, len(bad),
                      bad[0] * s.chunk_size)
            plan = ReadPlan(None, None, f"CBT answer inconsistent: {len(bad)} sampled "
                                        f"unchanged chunk(s) differ")
        total = disk.capacity_bytes if plan.only is None else len(plan.only) * s.chunk_size
        m = meter(f"{vm}:{disk.key}", f"{vm} {disk.label}", total)
        t0 = time.perf_counter()
        try:
            chunks, stats = copy_disk_to_store(reader, st, chunk_size=s.chunk_size,
                                               workers=env.dc.proxies[0].read_streams,
                                               progress=m, only=plan.only, base=plan.base)
        finally:
            m.close()
    finally:
        reader.close()
    if plan.full_reason and prev is not None:
        log.warning("%s %s read in full: %s", vm, disk.label, plan.full_reason)
    manifest = DiskManifest(key=disk.key, label=disk.label, capacity_bytes=disk.capacity_bytes,
                            chunk_size=s.chunk_size, chunks=chunks, change_id=disk.change_id,
                            full_reason=plan.full_reason, transport=transport)
    return DiskCopy(manifest=manifest, bytes_read=stats.bytes_read,
                    bytes_added=stats.bytes_added, seconds=time.perf_counter() - t0,
                    chunks_read=stats.chunks_new + stats.chunks_reused + stats.chunks_zero,
                    transport=transport)


@step(name="commit version", retries=3)
def commit_version(env: Environment, store: str | None, session_id: str, vm: VmInfo,
                   quiesced: bool, copies: list[DiskCopy], note: str) -> str:
    """Manifest made durable first, then one catalog transaction: the version now exists."""
    version_id = session_id
    created = datetime.now(UTC)
    manifest = VersionManifest(version_id=version_id, object_name=vm.name, created=created,
                               quiesced=quiesced, vm=vm.model_dump(),
                               disks=[c.manifest for c in copies])
    write_manifest(env.store(store), manifest)
    env.catalog().commit_version(
        version_id=version_id, session_id=session_id, object_kind="vm", name=vm.name,
        store=env.dc.store(store).name, created=created, quiesced=quiesced,
        bytes_read=sum(c.bytes_read for c in copies),
        bytes_added=sum(c.bytes_added for c in copies),
        disks=[{"key": c.manifest.key, "label": c.manifest.label,
                "capacity_bytes": c.manifest.capacity_bytes,
                "chunks_stored": c.manifest.stored_chunks} for c in copies],
        note=note)
    return version_id


@step(name="find previous version")
def previous_version(env: Environment, vm: str, store: str | None) -> str | None:
    """The latest version of `vm` in this store: the base an incremental builds on."""
    name = env.dc.store(store).name
    rows = [v for v in env.catalog().versions(vm) if v.store == name]
    return rows[-1].id if rows else None


@step(name="read manifest")
def load_manifest(env: Environment, version_id: str) -> VersionManifest:
    row = env.catalog().version(version_id)
    return read_manifest(env.store(row.store), version_id)


@step(name="check version readable", retries=0)
def check_version_readable(env: Environment, store: str, version_id: str) -> int:
    """Read, decrypt and hash every chunk of a version without writing anything."""
    st = env.store(store)
    manifest = read_manifest(st, version_id)
    n = 0
    for disk in manifest.disks:
        for _ in restore_blocks(st, disk, workers=env.dc.proxies[0].workers):
            n += 1
    return n


@step(name="restore disk", retries=2, delay=2.0)
def restore_disk(env: Environment, vcenter: str, store: str, source: DiskManifest,
                 target: DiskInfo, vm: str) -> int:
    """Write a version's disk over the target disk; every chunk is verified as it is read.
    By the direct transport zero chunks become holes in the target file."""
    workers = env.dc.proxies[0].workers
    m = meter(f"restore:{vm}:{target.key}", f"restore {vm} {target.label}",
              source.capacity_bytes)
    try:
        transport, passed = write_target_disk(
            env, vcenter, target,
            restore_blocks(env.store(store), source, workers=workers, progress=m))
    finally:
        m.close()
    log = get_run_logger()
    for why in passed:
        log.warning("restore %s %s: %s", vm, target.label, why)
    log.info("restored %s %s by %s transport", vm, target.label, transport)
    return source.capacity_bytes


@step(name="verify restored disk", retries=2)
def verify_restored_disk(env: Environment, vcenter: str, store: str, source: DiskManifest,
                         target: DiskInfo) -> None:
    """Read the written disk back and compare every chunk with the manifest."""
    reader, _, _ = open_reader(env, vcenter, target)
    try:
        bad = verify_disk(reader, source, env.store(store).chunk_id,
                          workers=env.dc.proxies[0].read_streams)
    finally:
        reader.close()
    if bad:
        raise PermanentError(f"restored disk {target.file_name} differs from the version in "
                             f"{len(bad)} chunk(s), first at byte {bad[0] * source.chunk_size}")

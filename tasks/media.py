"""Media steps: disks into the store, versions committed, disks back out and verified."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pydantic import BaseModel

from dpflow.environment import environment
from dpflow.errors import PermanentError
from dpflow.progress import meter
from dpflow.store import DiskManifest, VersionManifest
from dpflow.store.manifest import read_manifest, write_manifest
from dpflow.store.pipeline import backup_disk as copy_disk_to_store
from dpflow.store.pipeline import restore_blocks, verify_disk
from drivers.protocols import DiskInfo, VmInfo
from tasks.common import step


class DiskCopy(BaseModel):
    manifest: DiskManifest
    bytes_read: int
    bytes_added: int
    seconds: float


@step(name="back up disk", retries=2, delay=2.0)
def backup_disk(config: str, vcenter: str, vm: str, disk: DiskInfo,
                store: str | None) -> DiskCopy:
    """One frozen snapshot disk into the store. A retry re-reads; stored chunks are kept."""
    env = environment(config)
    s = env.dc.store(store)
    proxy = env.dc.proxies[0]
    reader = env.hypervisor(vcenter).open_disk(disk)
    m = meter(f"{vm}:{disk.key}", f"{vm} {disk.label}", disk.capacity_bytes)
    t0 = time.perf_counter()
    try:
        chunks, stats = copy_disk_to_store(reader, env.store(store),
                                           chunk_size=s.chunk_size,
                                           workers=proxy.read_streams, progress=m)
    finally:
        m.close()
        reader.close()
    manifest = DiskManifest(key=disk.key, label=disk.label, capacity_bytes=disk.capacity_bytes,
                            chunk_size=s.chunk_size, chunks=chunks)
    return DiskCopy(manifest=manifest, bytes_read=stats.bytes_read,
                    bytes_added=stats.bytes_added, seconds=time.perf_counter() - t0)


@step(name="commit version", retries=3)
def commit_version(config: str, store: str | None, session_id: str, vm: VmInfo,
                   quiesced: bool, copies: list[DiskCopy], note: str) -> str:
    """Manifest made durable first, then one catalog transaction: the version now exists."""
    env = environment(config)
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


@step(name="read manifest")
def load_manifest(config: str, version_id: str) -> VersionManifest:
    env = environment(config)
    row = env.catalog().version(version_id)
    return read_manifest(env.store(row.store), version_id)


@step(name="restore disk", retries=2, delay=2.0)
def restore_disk(config: str, vcenter: str, store: str, source: DiskManifest,
                 target: DiskInfo, vm: str) -> int:
    """Write a version's disk over the target disk; every chunk is verified as it is read."""
    env = environment(config)
    workers = env.dc.proxies[0].workers
    m = meter(f"restore:{vm}:{target.key}", f"restore {vm} {target.label}",
              source.capacity_bytes)
    try:
        env.hypervisor(vcenter).write_disk(
            target, restore_blocks(env.store(store), source, workers=workers, progress=m))
    finally:
        m.close()
    return source.capacity_bytes


@step(name="verify restored disk", retries=2)
def verify_restored_disk(config: str, vcenter: str, store: str, source: DiskManifest,
                         target: DiskInfo) -> None:
    """Read the written disk back and compare every chunk with the manifest."""
    env = environment(config)
    reader = env.hypervisor(vcenter).open_disk(target)
    try:
        bad = verify_disk(reader, source, env.store(store).chunk_id,
                          workers=env.dc.proxies[0].read_streams)
    finally:
        reader.close()
    if bad:
        raise PermanentError(f"restored disk {target.file_name} differs from the version in "
                             f"{len(bad)} chunk(s), first at byte {bad[0] * source.chunk_size}")

"""Version manifests: what a version is made of, written last.

A manifest names every chunk of every disk in order (None for an all-zero chunk), plus
the VM configuration needed to rebuild the VM. It is written only after all its chunks
are durable (the store is flushed first), so a manifest on disk is a complete, restorable
version. Encrypted stores seal manifests too, bound to their version id.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dpflow.errors import NotFound
from dpflow.store.chunks import ChunkStore, CorruptChunk
from dpflow.store.durable import write_atomic


class DiskManifest(BaseModel):
    key: int
    label: str
    capacity_bytes: int
    chunk_size: int
    chunks: list[str | None]
    change_id: str | None = None
    full_reason: str | None = None
    transport: str | None = None  # how the disk was read: "direct" or "network"

    @property
    def stored_chunks(self) -> int:
        return sum(1 for c in self.chunks if c is not None)


class VersionManifest(BaseModel):
    version_id: str
    object_name: str
    created: datetime
    quiesced: bool
    vm: dict[str, Any]
    disks: list[DiskManifest]


def _path(store: ChunkStore, version_id: str) -> Path:
    return store.versions_dir / f"{version_id}.manifest"


def write_manifest(store: ChunkStore, manifest: VersionManifest) -> None:
    store.flush()
    data = manifest.model_dump_json().encode()
    if store.sealer:
        data = store.sealer.seal(data, manifest.version_id.encode())
    write_atomic(_path(store, manifest.version_id), data, store.tmp_dir)


def read_manifest(store: ChunkStore, version_id: str) -> VersionManifest:
    try:
        data = _path(store, version_id).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"version {version_id} has no manifest in store {store.root}") from exc
    if store.sealer:
        try:
            data = store.sealer.open(data, version_id.encode())
        except ValueError as exc:
            raise CorruptChunk(f"manifest of version {version_id} fails authentication") from exc
    return VersionManifest.model_validate_json(data)


def manifest_ids(store: ChunkStore) -> list[str]:
    return sorted(p.stem for p in store.versions_dir.glob("*.manifest"))


def delete_manifest(store: ChunkStore, version_id: str) -> None:
    _path(store, version_id).unlink(missing_ok=True)

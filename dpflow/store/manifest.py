"""Version manifests: what a version is made of, written last.

A manifest names every chunk of every disk in order (None for an all-zero chunk), plus
the VM configuration needed to rebuild the VM. It is written only after all its chunks
are durable, so a manifest on disk is a complete, restorable version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from dpflow.errors import NotFound
from dpflow.store.chunks import ChunkStore
from dpflow.store.durable import write_atomic


class DiskManifest(BaseModel):
    key: int
    label: str
    capacity_bytes: int
    chunk_size: int
    chunks: list[str | None]

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


def write_manifest(store: ChunkStore, manifest: VersionManifest) -> None:
    store.sync_dirs()
    path = store.versions_dir / f"{manifest.version_id}.json"
    write_atomic(path, manifest.model_dump_json().encode(), store.tmp_dir)


def read_manifest(store: ChunkStore, version_id: str) -> VersionManifest:
    path = store.versions_dir / f"{version_id}.json"
    try:
        return VersionManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise NotFound(f"version {version_id} has no manifest in store {store.root}") from exc

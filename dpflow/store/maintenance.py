"""Verify and prune: the store's health checks and garbage collection.

Prune and running backups: a backup registers itself (locks/<session>.session) under a
shared flock of locks/prune.lock; prune deletes only under the exclusive flock and only
when no live backup is registered. So no chunk a running backup relies on (new, or an old
one it deduplicated against) is ever deleted; prune defers instead, and says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpflow.errors import PermanentError
from dpflow.store.chunks import ChunkStore, CorruptChunk
from dpflow.store.manifest import VersionManifest, manifest_ids, read_manifest
from dpflow.store.packs import pack_path

STALE_AFTER_S = 24 * 3600


@contextmanager
def _flock(store: ChunkStore, mode: int) -> Iterator[None]:
    store.locks_dir.mkdir(exist_ok=True)
    fd = os.open(store.locks_dir / "prune.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def register_backup(store: ChunkStore, session_id: str) -> None:
    """Announce a running backup (waits while a prune is deleting)."""
    with _flock(store, fcntl.LOCK_SH):
        info = {"session": session_id, "host": socket.gethostname(), "pid": os.getpid(),
                "started": time.time()}
        (store.locks_dir / f"{session_id}.session").write_text(json.dumps(info))


def unregister_backup(store: ChunkStore, session_id: str) -> None:
    (store.locks_dir / f"{session_id}.session").unlink(missing_ok=True)


def live_backups(store: ChunkStore) -> list[dict[str, Any]]:
    """Registered backups that may still run (dead local processes and old ones are not)."""
    out = []
    for p in store.locks_dir.glob("*.session"):
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if time.time() - info.get("started", 0) > STALE_AFTER_S:
            continue
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
        out.append(info)
    return out


class StoreDamaged(PermanentError):
    """Verify found versions that cannot be restored; `report` says which and why."""

    report: VerifyReport


@dataclass(frozen=True)
class Catalogued:
    """A version the catalog lists in this store, as the catalog describes it."""

    version_id: str
    object_name: str
    disks: dict[int, int] | None = None  # image versions: disk key → chunks stored


@dataclass
class VerifyReport:
    versions: int = 0  # catalogued versions checked, with or without chunks
    chunks_checked: int = 0
    chunks_read: int = 0
    damaged: dict[str, list[str]] = field(default_factory=dict)  # chunk → versions it breaks
    errors: dict[str, str] = field(default_factory=dict)  # chunk → why
    unrestorable: dict[str, str] = field(default_factory=dict)  # catalogued version → why
    uncatalogued: list[str] = field(default_factory=list)  # manifests no catalog row names

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.unrestorable


def referenced_chunks(store: ChunkStore, extra: Iterable[tuple[str, str]] = ()
                      ) -> dict[str, list[str]]:
    """chunk id → versions that use it: image manifests plus `extra` (version, chunk) pairs."""
    refs: dict[str, list[str]] = {}
    for vid in manifest_ids(store):
        _add_manifest_refs(refs, vid, read_manifest(store, vid))
    _add_extra_refs(refs, extra)
    return refs


def _add_manifest_refs(refs: dict[str, list[str]], vid: str, manifest: VersionManifest) -> None:
    for disk in manifest.disks:
        for cid in disk.chunks:
            if cid is not None:
                versions = refs.setdefault(cid, [])
                if not versions or versions[-1] != vid:
                    versions.append(vid)


def _add_extra_refs(refs: dict[str, list[str]], extra: Iterable[tuple[str, str]]) -> None:
    for vid, cid in extra:
        versions = refs.setdefault(cid, [])
        if vid not in versions:
            versions.append(vid)


def _check_manifests(store: ChunkStore, catalogued: list[Catalogued],
                     report: VerifyReport) -> dict[str, list[str]]:
    """Catalog ↔ manifests: each catalogued version has a readable manifest that agrees
    with its catalog row. Returns the chunk references of every readable manifest."""
    refs: dict[str, list[str]] = {}
    on_disk = set(manifest_ids(store))
    named = {c.version_id for c in catalogued}
    for c in catalogued:
        if c.version_id not in on_disk:
            report.unrestorable[c.version_id] = "its manifest is missing from the store"
            continue
        try:
            manifest = read_manifest(store, c.version_id)
        except (CorruptChunk, ValueError) as exc:
            report.unrestorable[c.version_id] = f"its manifest is unreadable: {exc}"
            continue
        if c.disks is not None:
            have = {d.key: d.stored_chunks for d in manifest.disks}
            if have != c.disks:
                report.unrestorable[c.version_id] = (
                    f"its manifest lists disks {have} (key: chunks), the catalog {c.disks}")
        _add_manifest_refs(refs, c.version_id, manifest)
    report.uncatalogued = sorted(on_disk - named)
    for vid in report.uncatalogued:  # not restorable through the catalog, but still stored
        try:
            _add_manifest_refs(refs, vid, read_manifest(store, vid))
        except (CorruptChunk, ValueError):
            pass
    return refs


def verify(store: ChunkStore, catalogued: list[Catalogued], *, read_percent: float = 0.0,
           seed: int | None = None, extra: Iterable[tuple[str, str]] = ()) -> VerifyReport:
    """Cross-check catalog ↔ manifests ↔ chunks: every catalogued version has its manifest,
    every chunk a manifest or the catalog (`extra`) names exists in a whole pack, and
    `read_percent` of them are also read, decrypted and re-hashed. A version that cannot
    be restored is named in `unrestorable`, with the first reason found."""
    report = VerifyReport(versions=len(catalogued))
    refs = _check_manifests(store, catalogued, report)
    _add_extra_refs(refs, extra)
    rng = random.Random(seed)
    sizes: dict[str, int] = {}
    for cid, versions in refs.items():
        report.chunks_checked += 1
        loc = store.index.lookup(cid)
        why = None
        if loc is None:
            why = "missing from the index"
        else:
            pack, offset, length = loc
            if pack not in sizes:
                try:
                    sizes[pack] = pack_path(store.packs_dir, pack).stat().st_size
                except FileNotFoundError:
                    sizes[pack] = -1
            if sizes[pack] < offset + length:
                why = f"pack {pack} missing or truncated"
            elif read_percent >= 100 or (read_percent > 0 and rng.random() * 100 < read_percent):
                report.chunks_read += 1
                try:
                    store.get(cid)
                except CorruptChunk as exc:
                    why = str(exc)
        if why:
            report.damaged[cid] = versions
            report.errors[cid] = why
            for vid in versions:
                if vid not in report.uncatalogued:
                    report.unrestorable.setdefault(
                        vid, why if why.startswith("chunk") else f"chunk {cid}: {why}")
    return report


TEMP_GRACE_S = 60  # a temporary file this young may belong to a writer still starting
ATOMIC_TEMP_STALE_S = 3600  # write_atomic's temporaries live for milliseconds


def _held(path: Path) -> bool:
    """Whether a live writer holds this temporary pack (PackWriter flocks it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True  # gone already: nothing to do
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_temp(store: ChunkStore, *, apply: bool = True) -> list[tuple[str, int]]:
    """Remove what dead writers left in the store: temporary packs no live process holds,
    stale temporaries of atomic writes, and registrations of backups that are gone.
    Returns (file, bytes) of each one removed (or, with apply=False, that would be)."""
    now = time.time()
    doomed: list[tuple[Path, str, int]] = []
    for path in sorted(store.tmp_dir.iterdir()):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        age = now - st.st_mtime
        if path.name.endswith(".pack.tmp"):
            if age > TEMP_GRACE_S and not _held(path):
                doomed.append((path, f"tmp/{path.name}", st.st_size))
        elif age > ATOMIC_TEMP_STALE_S:
            doomed.append((path, f"tmp/{path.name}", st.st_size))
    live = {b["session"] for b in live_backups(store)}
    for path in sorted(store.locks_dir.glob("*.session")):
        if path.stem not in live:
            try:
                doomed.append((path, f"locks/{path.name}", path.stat().st_size))
            except FileNotFoundError:
                continue
    out: list[tuple[str, int]] = []
    for path, name, size in doomed:
        if apply:
            try:
                path.unlink()
            except FileNotFoundError:  # a concurrent run's sweep removed (and reports) it
                continue
        out.append((name, size))
    return out


@dataclass
class PruneReport:
    deferred_by: list[str] = field(default_factory=list)
    packs_deleted: int = 0
    chunks_freed: int = 0
    bytes_freed: int = 0
    packs_kept_partly_unused: int = 0
    unindexed_removed: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes)
    temp_removed: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes)
    leftover_sessions: list[str] = field(default_factory=list)  # closed as aborted

    @property
    def temp_files_removed(self) -> int:
        return len(self.temp_removed)


def prune(store: ChunkStore, *, apply: bool, extra: Iterable[tuple[str, str]] = ()
          ) -> PruneReport:
    """Delete packs none of whose chunks any version references.

    Packs that still hold some referenced chunk are kept whole (no repacking in v2).
    Pack files the index does not name are deleted too: nothing can read them (a prune
    killed between its index update and its deletions, or a backup killed between sealing
    a pack and indexing it, leaves them), and no backup is live while prune holds its lock.
    """
    report = PruneReport()
    with _flock(store, fcntl.LOCK_EX if apply else fcntl.LOCK_SH):
        live = live_backups(store)
        if live:
            report.deferred_by = [b["session"] for b in live]
            return report
        refs = referenced_chunks(store, extra)
        by_pack: dict[str, list[tuple[str, int]]] = {}
        for cid, pack, _off, length, _created in store.index.entries():
            by_pack.setdefault(pack, []).append((cid, length))
        doomed = []
        for pack, chunks in by_pack.items():
            used = sum(1 for cid, _ in chunks if cid in refs)
            if used == 0:
                doomed.append(pack)
                report.chunks_freed += len(chunks)
                report.bytes_freed += sum(n for _, n in chunks)
            elif used < len(chunks):
                report.packs_kept_partly_unused += 1
        report.packs_deleted = len(doomed)
        report.unindexed_removed = _unindexed_packs(store, set(by_pack))
        if apply:
            store.index.remove_packs(doomed)  # index first: a chunk is never listed but gone
            for pack in doomed:
                pack_path(store.packs_dir, pack).unlink(missing_ok=True)
            for name, _ in report.unindexed_removed:
                (store.root / name).unlink(missing_ok=True)
        report.temp_removed = sweep_temp(store, apply=apply)
        return report


def _unindexed_packs(store: ChunkStore, indexed: set[str]) -> list[tuple[str, int]]:
    """(file relative to the store, bytes) of every sealed pack the index does not name."""
    out = []
    for path in sorted(store.packs_dir.glob("*/*.pack")):
        if path.stem not in indexed:
            try:
                out.append((str(path.relative_to(store.root)), path.stat().st_size))
            except FileNotFoundError:
                continue
    return out

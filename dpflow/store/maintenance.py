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

from dpflow.store.chunks import ChunkStore, CorruptChunk
from dpflow.store.manifest import manifest_ids, read_manifest
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


def live_backups(store: ChunkStore) -> list[dict]:
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


@dataclass
class VerifyReport:
    versions: int = 0
    chunks_checked: int = 0
    chunks_read: int = 0
    damaged: dict[str, list[str]] = field(default_factory=dict)  # chunk → versions it breaks
    errors: dict[str, str] = field(default_factory=dict)  # chunk → why

    @property
    def ok(self) -> bool:
        return not self.damaged


def referenced_chunks(store: ChunkStore, extra: Iterable[tuple[str, str]] = ()
                      ) -> dict[str, list[str]]:
    """chunk id → versions that use it: image manifests plus `extra` (version, chunk) pairs."""
    refs: dict[str, list[str]] = {}
    for vid in manifest_ids(store):
        for disk in read_manifest(store, vid).disks:
            for cid in disk.chunks:
                if cid is not None:
                    versions = refs.setdefault(cid, [])
                    if not versions or versions[-1] != vid:
                        versions.append(vid)
    for vid, cid in extra:
        versions = refs.setdefault(cid, [])
        if vid not in versions:
            versions.append(vid)
    return refs


def verify(store: ChunkStore, *, read_percent: float = 0.0, seed: int | None = None,
           extra: Iterable[tuple[str, str]] = ()) -> VerifyReport:
    """Every referenced chunk exists in a whole pack; `read_percent` of them are also read,
    decrypted and re-hashed."""
    refs = referenced_chunks(store, extra)
    report = VerifyReport(versions=len({v for vs in refs.values() for v in vs}))
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
    return report


@dataclass
class PruneReport:
    deferred_by: list[str] = field(default_factory=list)
    packs_deleted: int = 0
    chunks_freed: int = 0
    bytes_freed: int = 0
    packs_kept_partly_unused: int = 0
    temp_files_removed: int = 0


def prune(store: ChunkStore, *, apply: bool, extra: Iterable[tuple[str, str]] = ()
          ) -> PruneReport:
    """Delete packs none of whose chunks any version references.

    Packs that still hold some referenced chunk are kept whole (no repacking in v2).
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
        if apply:
            store.index.remove_packs(doomed)  # index first: a chunk is never listed but gone
            for pack in doomed:
                pack_path(store.packs_dir, pack).unlink(missing_ok=True)
            for tmp in store.tmp_dir.iterdir():
                tmp.unlink(missing_ok=True)
                report.temp_files_removed += 1
        return report

"""File-level backup steps: the level and its base decided from the catalog, the guest
file systems of a snapshot disk walked and their new or changed data written into the
store through the data pipeline (dpflow/store/pipeline.py, as disk images are), and the
version committed."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from dpflow.environment import Environment
from dpflow.errors import UserError
from dpflow.guestfs import RangeFile, discover
from dpflow.guestfs.fs import Entry, GuestVolume
from dpflow.guestfs.select import Selection
from dpflow.store import VersionManifest
from dpflow.store.manifest import write_manifest
from dpflow.store.pipeline import StreamWriter
from drivers.protocols import DiskInfo, VmInfo
from tasks.common import step

LEVELS = ("full", "incr", "diff")
_ENTRY_FIELDS = ("volume", "path", "kind", "size", "mtime_ns", "ctime_ns", "mode", "uid", "gid",
                 "owner", "attributes", "inode", "nlink", "target")


class DiskFiles(BaseModel):
    disk_key: int
    volumes: list[dict[str, Any]]
    files: list[dict[str, Any]]
    files_read: int = 0
    bytes_read: int = 0  # file bytes read from the guest
    bytes_added: int = 0
    device_bytes_read: int = 0  # bytes read from the snapshot disk (metadata included)
    problems: list[str] = []


# --- planning (catalog only: before any hardware) ----------------------------------------
def plan_level(env: Environment, vm: str, level: str, store: str | None,
               full_if_needed: bool) -> tuple[str, str | None]:
    """The level to run and the version it compares with (None for a full)."""
    if level not in LEVELS:
        raise UserError(f"unknown level '{level}': use full, incr or diff")
    if level == "full":
        return "full", None
    store_name = env.dc.store(store).name
    sets = [s for s in env.catalog().file_sets(vm) if s.version.store == store_name]
    fulls = [s for s in sets if s.level == "full"]
    if not fulls:
        if full_if_needed:
            return "full", None
        raise UserError(f"no earlier full file-level backup of VM '{vm}' in store "
                        f"{store_name}: a {level} needs one; run --level full, or add "
                        f"--full-if-needed")
    base = sets[-1] if level == "incr" else fulls[-1]
    return level, base.version_id


# --- backup -------------------------------------------------------------------------------
def _read_pieces(stream: Any, size: int, piece: int = 4 << 20) -> Iterator[bytes]:
    """A file through its file-system stream, in large reads."""
    total = 0
    while total < size:
        data = stream.read(min(piece, size - total))
        if not data:
            raise OSError(f"file data ends at {total} of {size} bytes")
        total += len(data)
        yield data


def _unchanged(prev: Any, e: Entry) -> bool:
    return (prev is not None and prev.kind == e.kind and prev.size == e.size
            and prev.mtime_ns == e.mtime_ns and prev.ctime_ns == e.ctime_ns
            and prev.inode == e.inode and prev.digest is not None)


def _record(e: Entry) -> dict[str, Any]:
    return {k: getattr(e, k) for k in _ENTRY_FIELDS}


@step(name="back up guest files", retries=2, delay=2.0)
def backup_disk_files(env: Environment, vcenter: str, vm: str, disk: DiskInfo, index: int,
                      base_version: str | None, include: list[str] | None,
                      exclude: list[str] | None, store: str | None) -> DiskFiles:
    """Walk the file systems of one frozen snapshot disk; new or changed file data into the
    store. Unchanged files (same size, times and inode as in the base) are not read."""
    s = env.dc.store(store)
    chunk_store = env.store(store)
    sel = Selection(include, exclude)
    base: dict[tuple[str, str], Any] = {}
    if base_version:
        prefix = f"d{index}"
        base = {(r.volume, r.path): r for r in env.catalog().files(base_version)
                if r.volume == prefix or r.volume.startswith(prefix + "p")
                or r.volume.startswith(prefix + "-")}
    reader = env.hypervisor(vcenter).open_disk(disk)
    # 1 MiB cached blocks: small files and metadata lie together, one request serves many
    dev = RangeFile(reader, disk.capacity_bytes, block=1 << 20, cache_blocks=32,
                    direct_from=1 << 20)
    out = DiskFiles(disk_key=disk.key, volumes=[], files=[])
    writer = StreamWriter(chunk_store, s.chunk_size, env.dc.proxies[0].workers)
    prefetch = _Prefetch(reader, env.dc.proxies[0].read_streams)
    try:
        for report, vol in discover(dev, disk.capacity_bytes, index):
            out.volumes.append(report.__dict__)
            if vol is None or not sel.wants_volume(vol.name):
                if report.error:
                    out.problems.append(f"{report.name}: {report.error}")
                continue
            _walk_volume(vol, sel, base, writer, out, prefetch)
            out.problems += vol.problems
        prefetch.close()
        writer.commit()  # every chunk the file list names is durable before we return
    except BaseException:
        prefetch.close()
        writer.abandon()  # compensation: half-written packs never become visible
        raise
    finally:
        reader.close()
    out.bytes_added = writer.stats.bytes_added
    out.device_bytes_read = dev.bytes_read
    return out


class _Prefetch:
    """File data read ahead of the walk, in parallel, straight from the device's range
    reader (thread-safe); the walk itself stays on one thread with the parsers."""

    PIECE = 4 << 20
    WINDOW = 64 << 20  # bytes in flight at most
    SMALL = 256 << 10  # smaller files come through the parser's block cache

    def __init__(self, reader: Any, workers: int) -> None:
        self.reader = reader
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="dpflow-read")

    def fetch(self, extents: list[tuple[int | None, int]]) -> list[Future[bytes] | int]:
        out: list[Future[bytes] | int] = []
        for start, length in extents:
            for at in range(0, length, self.PIECE):
                n = min(self.PIECE, length - at)
                out.append(n if start is None else
                           self.pool.submit(self.reader.read, start + at, n))
        return out

    @staticmethod
    def pieces(futures: list[Future[bytes] | int]) -> Iterator[bytes]:
        for f in futures:
            yield bytes(f) if isinstance(f, int) else f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _walk_volume(vol: GuestVolume, sel: Selection, base: dict[tuple[str, str], Any],
                 writer: StreamWriter, out: DiskFiles, prefetch: _Prefetch | None = None) -> None:
    pending: deque[tuple[dict[str, Any], Entry, list[Future[bytes] | int] | None]] = deque()
    in_flight = 0

    def finish(rec: dict[str, Any], e: Entry, futs: list[Future[bytes] | int] | None) -> None:
        try:
            if futs is not None:
                digest, chunks, n = writer.write(_Prefetch.pieces(futs), e.size)
            else:
                digest, chunks, n = writer.write(_read_pieces(vol.open(e), e.size), e.size)
        except Exception as exc:  # noqa: BLE001 - one unreadable file, reported
            vol._problem(e.path, exc)
            return
        rec.update(digest=digest, chunks=json.dumps(chunks), chunk_size=writer.chunk_size)
        out.files_read += 1
        out.bytes_read += n
        out.files.append(rec)

    try:
        for e in vol.walk(lambda p, d: sel(vol.name, p, d)):
            rec = _record(e)
            rec.update(digest=None, chunks=None, chunk_size=None, changed=True)
            prev = base.get((e.volume, e.path))
            if e.kind == "file":
                if prev is not None and _unchanged(prev, e):
                    rec.update(digest=prev.digest, chunks=prev.chunks,
                               chunk_size=prev.chunk_size, changed=False)
                    out.files.append(rec)
                    continue
                futs = None
                if prefetch is not None and e.size >= prefetch.SMALL:
                    try:
                        ext = vol.extents(e)
                    except Exception as exc:  # noqa: BLE001 - damaged mapping, reported
                        vol._problem(e.path, exc)
                        continue
                    if ext is not None:
                        futs = prefetch.fetch(ext)
                        in_flight += e.size
                if futs is None:
                    while pending:  # keep the parsers' reads on this thread, in order
                        r, pe, pf = pending.popleft()
                        in_flight -= pe.size if pf is not None else 0
                        finish(r, pe, pf)
                    finish(rec, e, None)
                    continue
                pending.append((rec, e, futs))
                while pending and prefetch is not None and in_flight > prefetch.WINDOW:
                    r, pe, pf = pending.popleft()
                    in_flight -= pe.size
                    finish(r, pe, pf)
                continue
            if prev is not None:
                rec["changed"] = not (prev.kind == e.kind and prev.mtime_ns == e.mtime_ns
                                      and prev.ctime_ns == e.ctime_ns)
            out.files.append(rec)
        while pending:
            r, pe, pf = pending.popleft()
            finish(r, pe, pf)
    finally:
        for _, _, pf in pending:
            for f in pf or []:
                if not isinstance(f, int):
                    f.cancel()


@step(name="commit file version", retries=3)
def commit_files_version(env: Environment, store: str | None, session_id: str, vm: VmInfo,
                         quiesced: bool, level: str, base_version: str | None,
                         parts: list[DiskFiles], note: str) -> str:
    """Every chunk durable (the manifest's flush), then one catalog transaction. The file
    list lives in the catalog, which is also what verify and prune count (tasks/
    maintenance.py); the manifest marks the version in the store."""
    chunk_store = env.store(store)
    files = [f for p in parts for f in p.files]
    created = datetime.now(UTC)
    volumes = [v for p in parts for v in p.volumes]
    write_manifest(chunk_store, VersionManifest(
        version_id=session_id, object_name=vm.name, created=created, quiesced=quiesced,
        vm={"kind": "files", "level": level, "base_version": base_version,
            "volumes": volumes, "vm": vm.model_dump()}, disks=[]))
    env.catalog().commit_file_version(
        version_id=session_id, session_id=session_id, name=vm.name,
        store=env.dc.store(store).name, created=created, quiesced=quiesced, level=level,
        base_version_id=base_version, bytes_read=sum(p.bytes_read for p in parts),
        bytes_added=sum(p.bytes_added for p in parts), files=files,
        volumes=json.dumps(volumes), note=note)
    return session_id

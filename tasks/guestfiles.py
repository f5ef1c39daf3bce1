"""File-level steps: guest files of a snapshot disk into the store, versions committed,
files restored from a file-level version or straight out of an image version."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
from pydantic import BaseModel

from dpflow.environment import environment
from dpflow.errors import NotFound, UserError
from dpflow.guestfs import ImageDisk, RangeFile, SafeTarget, discover, split_path
from dpflow.guestfs.fs import Entry, GuestVolume
from dpflow.guestfs.restore import FileRestore, Restorer, mode_of, restore_volume
from dpflow.guestfs.select import Selection
from dpflow.store import ChunkStore, VersionManifest
from dpflow.store.manifest import read_manifest, write_manifest
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
def plan_level(config: str, vm: str, level: str, store: str | None,
               full_if_needed: bool) -> tuple[str, str | None]:
    """The level to run and the version it compares with (None for a full)."""
    if level not in LEVELS:
        raise UserError(f"unknown level '{level}': use full, incr or diff")
    if level == "full":
        return "full", None
    env = environment(config)
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
def _zero(data: bytes, _z: dict[int, bytes] = {}) -> bool:  # noqa: B006 - a cache on purpose
    z = _z.get(len(data))
    if z is None:
        z = _z[len(data)] = bytes(len(data))
    return data == z


class _Writer:
    """File contents into the store: hashing here, compression and writes overlapped."""

    READ = 4 << 20  # bytes per read from the snapshot disk (a multiple of any chunk size)

    def __init__(self, store: ChunkStore, chunk_size: int, workers: int) -> None:
        self.store, self.chunk_size = store, chunk_size
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="dpflow-put")
        self.inflight: deque[Future[int]] = deque()
        self.limit = 2 * max(1, workers)
        self.bytes_added = 0

    def _drain(self, keep: int) -> None:
        while len(self.inflight) > keep:
            self.bytes_added += self.inflight.popleft().result()

    def store_file(self, stream: Any, size: int) -> tuple[str, list[str | None], int]:
        """A file read through its file-system stream, in large reads."""
        def pieces() -> Iterator[bytes]:
            total = 0
            while total < size:
                piece = stream.read(min(self.READ, size - total))
                if not piece:
                    raise OSError(f"file data ends at {total} of {size} bytes")
                total += len(piece)
                yield piece
        return self.store_pieces(pieces(), size)

    def store_pieces(self, pieces: Iterator[bytes], size: int
                     ) -> tuple[str, list[str | None], int]:
        """File bytes in order, in any piece sizes, cut into chunks at file offsets that are
        multiples of the chunk size: the same bytes give the same chunks however read."""
        h = blake3.blake3(max_threads=1)
        chunks: list[str | None] = []
        total = 0
        cs = self.chunk_size
        carry = b""
        for piece in pieces:
            total += len(piece)
            h.update(piece)
            buf = carry + piece if carry else piece
            whole = len(buf) - len(buf) % cs
            for at in range(0, whole, cs):
                self._chunk(buf[at:at + cs], chunks)
            carry = buf[whole:]
        if carry:
            self._chunk(carry, chunks)
        if total != size:
            raise OSError(f"file data is {total} bytes, its size says {size}")
        return h.hexdigest(), chunks, total

    def _chunk(self, data: bytes, chunks: list[str | None]) -> None:
        if _zero(data):
            chunks.append(None)
            return
        cid = self.store.chunk_id(data)
        chunks.append(cid)
        self.inflight.append(self.pool.submit(self.store.put, cid, data))
        self._drain(self.limit)

    def close(self, wait_only: bool = False) -> None:
        try:
            if not wait_only:
                self._drain(0)
        finally:
            self.pool.shutdown(wait=True)


def _unchanged(prev: Any, e: Entry) -> bool:
    return (prev is not None and prev.kind == e.kind and prev.size == e.size
            and prev.mtime_ns == e.mtime_ns and prev.ctime_ns == e.ctime_ns
            and prev.inode == e.inode and prev.digest is not None)


def _record(e: Entry) -> dict[str, Any]:
    return {k: getattr(e, k) for k in _ENTRY_FIELDS}


@step(name="back up guest files", retries=2, delay=2.0)
def backup_disk_files(config: str, vcenter: str, vm: str, disk: DiskInfo, index: int,
                      base_version: str | None, include: list[str] | None,
                      exclude: list[str] | None, store: str | None) -> DiskFiles:
    """Walk the file systems of one frozen snapshot disk; new or changed file data into the
    store. Unchanged files (same size, times and inode as in the base) are not read."""
    env = environment(config)
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
    writer = _Writer(chunk_store, s.chunk_size, env.dc.proxies[0].workers)
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
        writer.close()
        chunk_store.flush()  # every chunk the file list names is durable before we return
    except BaseException:
        prefetch.close()
        writer.close(wait_only=True)
        chunk_store.abandon()  # compensation: half-written packs never become visible
        raise
    finally:
        reader.close()
    out.bytes_added = writer.bytes_added
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
                 writer: _Writer, out: DiskFiles, prefetch: _Prefetch | None = None) -> None:
    pending: deque[tuple[dict[str, Any], Entry, list[Future[bytes] | int] | None]] = deque()
    in_flight = 0

    def finish(rec: dict[str, Any], e: Entry, futs: list[Future[bytes] | int] | None) -> None:
        try:
            if futs is not None:
                digest, chunks, n = writer.store_pieces(_Prefetch.pieces(futs), e.size)
            else:
                digest, chunks, n = writer.store_file(vol.open(e), e.size)
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
                if _unchanged(prev, e):
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
                while pending and in_flight > prefetch.WINDOW:
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
def commit_files_version(config: str, store: str | None, session_id: str, vm: VmInfo,
                         quiesced: bool, level: str, base_version: str | None,
                         parts: list[DiskFiles], note: str) -> str:
    """Every chunk durable (the manifest's flush), then one catalog transaction. The file
    list lives in the catalog, which is also what verify and prune count (tasks/
    maintenance.py); the manifest marks the version in the store."""
    env = environment(config)
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


# --- restore ------------------------------------------------------------------------------
def select_catalogued(config: str, vm: str, patterns: list[str], version: str | None
                      ) -> tuple[str, list[Any]]:
    """(version id, file rows) a restore or find takes; UserError when nothing matches."""
    cat = environment(config).catalog()
    if version is None:
        sets = cat.file_sets(vm)
        if not sets:
            raise NotFound(f"no file-level version of VM '{vm}': `dpflow backup files {vm}` "
                           f"takes one")
        version = sets[-1].version_id
    fs = cat.file_set(version)
    if fs.version.object.name != vm:
        raise UserError(f"version {version} belongs to VM {fs.version.object.name}, not {vm}")
    sel = Selection(patterns)
    rows = [r for r in cat.files(version) if sel.takes(r.volume, r.path)]
    if not rows:
        raise UserError(f"nothing in version {version} of {vm} matches "
                        f"{' '.join(patterns)!r}: `dpflow find {vm} '*'` lists its files")
    return version, rows


def _blocks(store: ChunkStore, row: Any) -> Iterator[bytes]:
    """A catalogued file's bytes, each chunk verified by the store, the whole by digest."""
    chunks: list[str | None] = json.loads(row.chunks) if row.chunks else []
    chunk_size, size, digest, what = row.chunk_size or 1, row.size, row.digest, row.path
    h = blake3.blake3(max_threads=1)
    left = size
    for cid in chunks:
        n = min(chunk_size, left)
        data = bytes(n) if cid is None else store.get(cid)
        h.update(data)
        left -= len(data)
        yield data
    if left != 0 or (digest is not None and h.hexdigest() != digest):
        from dpflow.errors import PermanentError

        raise PermanentError(f"{what}: restored bytes do not match the catalogued digest")


@step(name="restore guest files", retries=1)
def restore_catalogued_files(config: str, vm: str, version: str, patterns: list[str],
                             target: str, conflict: str) -> FileRestore:
    env = environment(config)
    row = env.catalog().version(version)
    store = env.store(row.store)
    _, rows = select_catalogued(config, vm, patterns, version)
    with SafeTarget(target) as t:
        r = Restorer(t, conflict)
        for f in rows:
            r.restore((f.volume, *split_path(f.path)), f.kind, mode=f.mode,
                      mtime_ns=f.mtime_ns, attributes=f.attributes, link=f.target,
                      inode=f.inode or 0, nlink=f.nlink or 1,
                      blocks=lambda f=f: _blocks(store, f))
        r.finish()
    return r.out


@step(name="restore files from image", retries=1)
def restore_image_files(config: str, vm: str, version: str, patterns: list[str], target: str,
                        conflict: str) -> FileRestore:
    """Files straight out of an image version: its disks read lazily, chunk by chunk."""
    env = environment(config)
    row = env.catalog().version(version)
    store = env.store(row.store)
    manifest = read_manifest(store, version)
    sel = Selection(patterns)
    out = FileRestore()
    found = 0
    with SafeTarget(target) as t:
        r = Restorer(t, conflict, out)
        for i, dm in enumerate(manifest.disks):
            img = ImageDisk(store, dm)
            out.image_bytes += dm.capacity_bytes
            dev = RangeFile(img, dm.capacity_bytes, block=64 << 10, cache_blocks=64)
            for report, vol in discover(dev, dm.capacity_bytes, i):
                if vol is None or not sel.wants_volume(vol.name):
                    if report.error and sel.wants_volume(report.name):
                        out.failed.append(f"{report.name}: {report.error}")
                    continue
                found += restore_volume(r, vol, sel)
            out.source_bytes_read += img.bytes_fetched
            out.source_chunks_read += img.chunks_fetched
        r.finish()
    if not found:
        raise UserError(f"nothing in image version {version} of {vm} matches "
                        f"{' '.join(patterns)!r}")
    return out


def check_restore_target(config: str, target: str | Path) -> None:
    """A restore never writes into a store: one line before anything is touched."""
    where = Path(target).expanduser().resolve()
    for s in environment(config).dc.stores:
        root = Path(s.path).resolve()
        if where == root or where.is_relative_to(root):
            raise UserError(f"restore target {target} is inside store '{s.name}' ({root}): "
                            f"restore to a directory outside every store")


def image_version_of(config: str, vm: str, version: str | None) -> str:
    cat = environment(config).catalog()
    row = cat.version(version) if version else cat.latest_version(vm)
    if row.object.name != vm or row.object.kind != "vm":
        raise UserError(f"version {row.id} is not an image version of VM {vm}")
    return row.id



# --- into the running guest (vSphere guest operations) -------------------------------------
def guest_password(user: str | None, password_env: str | None) -> str:
    """The guest password from the environment; one line when anything is missing."""
    import os

    if not user or not password_env:
        raise UserError("guest credentials missing for an in-guest restore: give --guest-user "
                        "and --guest-password-env (the variable holding the password)")
    value = os.environ.get(password_env)
    if not value:
        raise UserError(f"guest credentials missing: environment variable {password_env} "
                        f"is empty")
    return value


@step(name="restore guest files into the guest", retries=1)
def restore_into_guest(config: str, vm: str, version: str, patterns: list[str],
                       guest_dir: str, user: str, password_env: str,
                       conflict: str) -> FileRestore:
    """Catalogued files uploaded into the running guest under `guest_dir`."""
    from drivers.vsphere_guest import GuestFileExists, GuestFiles

    env = environment(config)
    vcenter, info = env.locate_vm(vm)
    if info.power_state != "poweredOn":
        raise UserError(f"VM '{vm}' is {info.power_state}: an in-guest restore needs it "
                        f"running with VMware Tools")
    gf = GuestFiles(env.hypervisor(vcenter), info, user, guest_password(user, password_env))
    windows = info.guest_id.lower().startswith("win") or guest_dir[1:3] in (":\\", ":/")
    sep = "\\" if windows else "/"
    row = env.catalog().version(version)
    store = env.store(row.store)
    _, rows = select_catalogued(config, vm, patterns, version)
    out = FileRestore()
    made: set[str] = set()
    for r in rows:
        rel = split_path(r.path)
        where = f"{r.volume}:{r.path}"
        if not rel:
            continue
        path = guest_dir.rstrip("/\\") + sep + sep.join(rel)
        parent = path.rsplit(sep, 1)[0]
        if r.kind == "dir":
            if path not in made:
                gf.mkdir(path)
                made.add(path)
            continue
        if r.kind != "file":
            out.refused.append(f"{where}: {r.kind} not created in the guest")
            continue
        if parent not in made:
            gf.mkdir(parent)
            made.add(parent)
        name, n = path, 0
        while True:
            try:
                data = list(_blocks(store, r))
                gf.upload(name, data, r.size, overwrite=conflict == "overwrite",
                          mode=mode_of(r.mode, r.attributes),
                          mtime_s=r.mtime_ns // 10**9, windows=windows)
                break
            except GuestFileExists:
                if conflict == "skip":
                    out.skipped.append(where)
                    name = ""
                    break
                n += 1
                name = f"{path}.restored-{n}"
        if name:
            out.files += 1
            out.bytes_written += r.size
            if n:
                out.renamed.append(f"{where} -> {name}")
    return out

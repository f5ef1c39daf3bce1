"""Restoring guest objects into a SafeTarget, one at a time, with an honest tally.

One odd object never stops a restore: a name too long for the target is shortened (see
target.py) and listed; an object the target refuses, or whose data cannot be read (a
damaged guest file system, a damaged chunk in the store), is listed as failed and never
half-written. Only a target that can take nothing more (full, quota, read-only, I/O
error) or a store that cannot be reached stops the restore, with one line saying how much
was restored; the temporary file of the object being written is removed. Hard links
(same volume and inode, more than one link) are restored as links.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import blake3
from pydantic import BaseModel

from dpflow.errors import DpflowError, PermanentError
from dpflow.guestfs.fs import Entry, GuestVolume, _reraise_reader_failure
from dpflow.guestfs.names import split_path, unescape_name
from dpflow.guestfs.select import Selection
from dpflow.guestfs.target import SafeTarget, UnsafePath
from dpflow.store.chunks import CorruptChunk

#: errors after which no further object can be written to the target
STOP_ERRNOS = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
               errno.EROFS: "is read-only", errno.EIO: "has an I/O error"}


class TargetFailed(PermanentError):
    """The restore target cannot take more data."""


class FileRestore(BaseModel):
    files: int = 0  # regular files written
    hard_links: int = 0  # further names of a file already written, made as hard links
    symlinks: int = 0
    dirs: int = 0
    bytes_written: int = 0  # file bytes restored (holes included, hard links not)
    skipped: list[str] = []  # already in the target (conflict policy 'skip')
    refused: list[str] = []  # not created on purpose: devices, FIFOs, unsafe paths
    renamed: list[str] = []  # written under another name, each with the reason
    failed: list[str] = []  # could not be read from the guest or written to the target
    leftovers: list[str] = []  # temporary files of an interrupted restore, removed
    source_bytes_read: int = 0  # store bytes (image) fetched for this restore
    source_chunks_read: int = 0
    image_bytes: int = 0

    @property
    def restored(self) -> int:
        return self.files + self.hard_links + self.symlinks + self.dirs

    def totals(self) -> str:
        """One line with every count: nothing truncated, nothing left out."""
        return (f"{self.restored} object(s) restored ({self.files} files, {self.hard_links} "
                f"hard links, {self.symlinks} symlinks, {self.dirs} directories; "
                f"{self.bytes_written / 1e6:.1f} MB), {len(self.renamed)} renamed, "
                f"{len(self.refused)} refused, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed"
                + (f"; {len(self.leftovers)} temporary file(s) of an interrupted restore "
                   f"removed" if self.leftovers else ""))


class _ReadError(Exception):
    """The guest side of one object could not be read (damaged file system, short data)."""


def mode_of(mode: int | None, attributes: int | None) -> int | None:
    if mode is not None:
        return mode & 0o7777 & ~0o6000  # never set-id bits from a guest
    if attributes is not None:
        return 0o444 if attributes & 0x1 else 0o644  # NTFS read-only attribute
    return None


class Restorer:
    """Objects into `target` under one conflict policy, tallied in `out`."""

    def __init__(self, target: SafeTarget, conflict: str, out: FileRestore | None = None
                 ) -> None:
        self.t, self.conflict = target, conflict
        self.out = out if out is not None else FileRestore()
        self._links: dict[tuple[str, int], tuple[str, ...]] = {}

    def restore(self, parts: tuple[str, ...], kind: str, *, mode: int | None = None,
                mtime_ns: int | None = None, attributes: int | None = None,
                link: str | None = None, inode: int = 0, nlink: int = 1,
                blocks: Callable[[], Iterable[bytes]] | None = None) -> None:
        """One object; only a target that can take nothing more raises (TargetFailed)."""
        out, where = self.out, "/".join(parts)
        try:
            status = self._one(parts, kind, mode, mtime_ns, attributes, link, inode, nlink,
                               blocks)
        except UnsafePath as exc:
            out.refused.append(f"{where}: {exc}")
            return
        except _ReadError as exc:
            out.failed.append(f"{where}: not restored: {exc}"[:400])
            return
        except OSError as exc:
            why = STOP_ERRNOS.get(exc.errno or 0)
            if why is not None:
                raise TargetFailed(
                    f"restore stopped: target {self.t.root} {why} ({exc.strerror}) while "
                    f"writing {where}; so far {out.totals()}; make room and run the same "
                    f"restore again with --conflict skip to finish it") from None
            out.failed.append(f"{where}: not written: {exc.strerror or exc}")
            return
        if status is None:
            return
        if status.startswith("refused"):
            out.refused.append(f"{where}: {status}")
        elif status == "skipped":
            out.skipped.append(where)
        elif status.startswith("renamed:"):
            out.renamed.append(f"{where} -> {status.split(':', 1)[1]} (already in the "
                               f"target)")
        guest = unescape_name(parts[-1]) if parts else ""
        if guest != parts[-1] and status != "skipped" and not status.startswith("refused") \
                and parts not in self.t.name_changes:  # shortened: listed by finish()
            out.renamed.append(f"{where} (guest name {guest!r} cannot be a file name as "
                               f"is: escaped)")

    def _one(self, parts: tuple[str, ...], kind: str, mode: int | None,
             mtime_ns: int | None, attributes: int | None, link: str | None, inode: int,
             nlink: int, blocks: Callable[[], Iterable[bytes]] | None) -> str | None:
        t, out = self.t, self.out
        if kind == "dir":
            t.mkdir(parts, mode & 0o7777 if mode is not None else None, mtime_ns)
            out.dirs += 1
            return "written"
        if kind == "symlink":
            status = t.symlink(parts, link or "", self.conflict, mtime_ns)
            if status in ("written", "overwritten") or status.startswith("renamed:"):
                out.symlinks += 1
            return status
        if kind != "file":
            return f"refused: {kind} not created"
        key = (parts[0], inode) if nlink > 1 and inode and parts else None
        first = self._links.get(key) if key else None
        if first is not None:
            try:
                status = t.link(first, parts, self.conflict)
            except (OSError, UnsafePath) as exc:
                if isinstance(exc, OSError) and (exc.errno or 0) in STOP_ERRNOS:
                    raise
                first = None  # the first name is gone or links are refused: a copy
            else:
                if status != "skipped":
                    out.hard_links += 1
                return status
        written = 0

        def source() -> Iterator[bytes]:
            nonlocal written
            try:
                it = iter(blocks() if blocks is not None else ())
                for b in it:
                    written += len(b)
                    yield b
            except CorruptChunk as exc:  # this object's data is damaged; others may not be
                raise _ReadError(f"damaged in the store: {exc}") from exc
            except DpflowError:
                raise  # the store's or the session's failure, not this object's
            except Exception as exc:  # noqa: BLE001 - a damaged guest object
                raise _ReadError(f"{type(exc).__name__}: {exc}") from exc
        status = t.write_file(parts, source(), mode_of(mode, attributes), mtime_ns,
                              self.conflict)
        if status != "skipped":
            out.files += 1
            out.bytes_written += written
            if key is not None:
                self._links[key] = t.written_path(parts, status)
        return status

    def finish(self) -> None:
        """Directory times last; names shortened for the target listed, once each."""
        self.t.finish_dirs()
        for orig, new in self.t.name_changes.items():
            self.out.renamed.append(f"{'/'.join(orig)} -> {new} (name longer than "
                                    f"{self.t.name_max} bytes on the target)")
        self.t.name_changes.clear()
        self.out.leftovers += self.t.leftovers
        self.t.leftovers = []


def restore_volume(r: Restorer, vol: GuestVolume, sel: Selection | None = None) -> int:
    """Every selected object of one guest volume into the restorer; how many were taken.
    What the walk could not read (damaged records, forged entries) is listed as failed; a
    volume that cannot be walked at all likewise, and the restore goes on."""
    found = 0
    select = None if sel is None else (lambda p, d: sel(vol.name, p, d))
    try:
        for e in vol.walk(select):
            if sel is not None and not sel.takes(e.volume, e.path):
                continue
            found += 1
            r.restore((e.volume, *split_path(e.path)), e.kind, mode=e.mode,
                      mtime_ns=e.mtime_ns, attributes=e.attributes, link=e.target,
                      inode=e.inode, nlink=e.nlink, blocks=partial(_stream_blocks, vol, e))
    except (DpflowError, _ReadError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged volume, reported
        vol._problem("/", exc)
    r.out.refused += vol.forged
    r.out.failed += [p for p in vol.problems if p not in vol.forged]
    vol.problems, vol.forged = [], []
    return found


def _stream_blocks(vol: GuestVolume, e: Entry, block: int = 1 << 20) -> Iterator[bytes]:
    try:
        stream = vol.open(e)
        left = e.size
        while left > 0:
            data = stream.read(min(block, left))
            if not data:
                raise OSError(f"file data ends {left} bytes early")
            left -= len(data)
            yield data
    except Exception as exc:
        _reraise_reader_failure(vol.device, exc)  # the store failed: the session's error
        raise


def catalogued_blocks(store: Any, row: Any) -> Iterator[bytes]:
    """A catalogued file's bytes, each chunk verified by the store, the whole by digest;
    a mismatch is the store's damage to this file (CorruptChunk), never written as is."""
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
        raise CorruptChunk(f"{what}: restored bytes do not match the catalogued digest")

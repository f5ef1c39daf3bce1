"""A version published as a file system (FUSE): the datastore of an Instant VM Recovery.

The mount shows one folder with each disk of an image version as `disk<N>-flat.vmdk`
(plus its descriptor `disk<N>.vmdk`), at the disk's full size at once, whatever it is:
nothing is copied before the VM starts. A read fetches only the chunks it touches from
the store (decrypted and verified by the store, a few kept in a small cache); a write
goes to an overlay file beside it, chunk by chunk (a chunk's first write copies its
stored bytes there first), and from then on that chunk is read from the overlay. The
store is never written: dropping the overlay gives the version back as it was. Any other
file a hypervisor makes in the folder (a lock, a log) lives in the overlay directory.

The overlay's chunk map (which chunks live in the overlay) is kept beside it, in
`disk<N>.map`: one 4-byte index appended per chunk copied up, after the copy is on disk,
so a server started again on the same overlay (a restart, a crash) serves the guest's
writes again and never a half-copied chunk.

A read the store cannot answer (its storage unreachable, a chunk damaged) reaches the
guest as an I/O error and is reported once per outage, loudly, through `on_store_error`
(the server logs it and records it for `dpflow instant-recover --status`).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfusepy import FuseOSError, Operations

from dpflow.guestfs.blockdev import ImageDisk
from dpflow.store.chunks import ChunkStore
from dpflow.store.manifest import DiskManifest


def descriptor(flat_name: str, size: int) -> bytes:
    """A monolithic flat VMDK descriptor for `flat_name` of `size` bytes."""
    return ("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n"
            "parentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\n"
            f"RW {size // 512} VMFS \"{flat_name}\"\n").encode()


StoreErrorHook = Callable[[str, int, BaseException], None]


def map_path(overlay: Path) -> Path:
    """The chunk map kept beside an overlay file."""
    return overlay.with_suffix(".map")


def read_map(path: Path) -> set[int]:
    """The chunk indexes a map file names (a torn last entry is ignored)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return set()
    whole = len(raw) - len(raw) % 4
    return {i for (i,) in struct.iter_unpack("<I", raw[:whole])}


class OverlayDisk:
    """One published disk: stored chunks below, written chunks in a sparse overlay file."""

    def __init__(self, store: ChunkStore, disk: DiskManifest, overlay: Path,
                 on_store_error: StoreErrorHook | None = None, name: str = "") -> None:
        self.disk, self.size, self.cs = disk, disk.capacity_bytes, disk.chunk_size
        self.name = name or overlay.stem
        self.image = ImageDisk(store, disk, cache_chunks=16)
        self.fd = os.open(overlay, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.ftruncate(self.fd, self.size)
        # chunks whose bytes live in the overlay: those a server before this one copied up
        self.dirty: set[int] = read_map(map_path(overlay))
        self.map_fd = os.open(map_path(overlay), os.O_WRONLY | os.O_APPEND | os.O_CREAT
                              | os.O_CLOEXEC, 0o600)
        self.on_store_error = on_store_error
        self.writes = 0
        self._lock = threading.Lock()

    def _stored(self, offset: int, length: int) -> bytes:
        """The version's own bytes; a store that cannot answer is reported and the guest
        gets EIO (never zeros or stale bytes)."""
        try:
            return self.image.read(offset, length)
        except Exception as exc:  # noqa: BLE001 - every store failure is an I/O error here
            if self.on_store_error is not None:
                self.on_store_error(self.name, offset, exc)
            raise FuseOSError(errno.EIO) from exc

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        pos = offset
        while pos < offset + length:
            i, skip = divmod(pos, self.cs)
            n = min(self.cs - skip, offset + length - pos)
            with self._lock:
                mine = i in self.dirty
            out += (os.pread(self.fd, n, pos) if mine else self._stored(pos, n))
            pos += n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.size:
            raise FuseOSError(errno.EFBIG)  # a disk does not grow by writing past its end
        pos, view = offset, memoryview(data)
        while view:
            i, skip = divmod(pos, self.cs)
            n = min(self.cs - skip, len(view))
            with self._lock:
                if i not in self.dirty:  # copy the stored chunk up first, then map it
                    base = self._stored(i * self.cs, min(self.cs, self.size - i * self.cs))
                    os.pwrite(self.fd, base, i * self.cs)
                    os.fdatasync(self.fd)  # mapped only once its bytes are on disk
                    os.write(self.map_fd, struct.pack("<I", i))
                    self.dirty.add(i)
                os.pwrite(self.fd, view[:n], pos)
                self.writes += 1
            pos, view = pos + n, view[n:]
        return len(data)

    def fsync(self) -> None:
        os.fsync(self.fd)
        os.fsync(self.map_fd)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.map_fd)
        self.image.close()


class PublishedVersion(Operations):
    """The FUSE operations of one published version (see the module docstring)."""

    use_ns = True  # utimens times in nanoseconds

    def __init__(self, store: ChunkStore, disks: list[DiskManifest], folder: str,
                 overlay_dir: Path, on_store_error: StoreErrorHook | None = None) -> None:
        self.folder = folder
        self.files_dir = overlay_dir / "files"
        (self.files_dir / folder).mkdir(parents=True, exist_ok=True)
        self.disks = {f"/{folder}/disk{i}-flat.vmdk": OverlayDisk(
            store, d, overlay_dir / f"disk{i}.data", on_store_error, f"disk{i}")
            for i, d in enumerate(disks)}
        self.descriptors = {f"/{folder}/disk{i}.vmdk": descriptor(f"disk{i}-flat.vmdk",
                                                                  d.capacity_bytes)
                            for i, d in enumerate(disks)}
        self.t0 = time.time()

    # --- helpers ---------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return str(self.files_dir) + path

    def _virtual(self, path: str) -> bool:
        return path in self.disks or path in self.descriptors

    def _attrs(self, mode: int, size: int) -> dict[str, Any]:
        return {"st_mode": mode, "st_nlink": 1, "st_size": size, "st_uid": os.getuid(),
                "st_gid": os.getgid(), "st_atime": self.t0, "st_mtime": self.t0,
                "st_ctime": self.t0}

    # --- reading ---------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path in self.disks:
            return self._attrs(stat.S_IFREG | 0o600, self.disks[path].size)
        if path in self.descriptors:
            return self._attrs(stat.S_IFREG | 0o400, len(self.descriptors[path]))
        try:
            st = os.lstat(self._real(path))
        except FileNotFoundError:
            raise FuseOSError(errno.ENOENT) from None
        return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid",
                                            "st_gid", "st_atime", "st_mtime", "st_ctime")}

    def readdir(self, path: str, fh: int) -> list[str]:
        names = [".", ".."]
        real = self._real(path)
        if os.path.isdir(real):
            names += os.listdir(real)
        if path == f"/{self.folder}":
            names += [p.rsplit("/", 1)[1] for p in (*self.disks, *self.descriptors)]
        return names

    def open(self, path: str, flags: int) -> int:
        if self._virtual(path):
            if path in self.descriptors and flags & (os.O_WRONLY | os.O_RDWR):
                raise FuseOSError(errno.EROFS)
            return 0
        return os.open(self._real(path), flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path in self.disks:
            return self.disks[path].read(offset, size)
        if path in self.descriptors:
            return self.descriptors[path][offset:offset + size]
        return os.pread(fh, size, offset)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.files_dir)
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}

    # --- writing ---------------------------------------------------------------------
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path in self.disks:
            return self.disks[path].write(offset, data)
        if path in self.descriptors:
            raise FuseOSError(errno.EROFS)
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path in self.disks:
            if length != self.disks[path].size:
                raise FuseOSError(errno.EPERM)  # a published disk keeps its size
            return 0
        if path in self.descriptors:
            raise FuseOSError(errno.EROFS)
        os.truncate(self._real(path), length)
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        if self._virtual(path):
            raise FuseOSError(errno.EEXIST)
        return os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def unlink(self, path: str) -> None:
        if self._virtual(path):
            raise FuseOSError(errno.EPERM)  # the version's disks are not deleted here
        os.unlink(self._real(path))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def rename(self, old: str, new: str) -> None:
        if self._virtual(old) or self._virtual(new):
            raise FuseOSError(errno.EPERM)
        os.rename(self._real(old), self._real(new))

    def chmod(self, path: str, mode: int) -> int:
        if not self._virtual(path):
            os.chmod(self._real(path), mode)
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        if not self._virtual(path):
            os.close(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if path in self.disks:
            self.disks[path].fsync()
        elif not self._virtual(path):
            os.fsync(fh)
        return 0

    def destroy(self, path: str) -> None:
        for d in self.disks.values():
            d.close()

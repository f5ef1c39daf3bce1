"""Direct storage transport: the proxy reads and writes a datastore's files itself.

VDDK and Veeam call it SAN mode (the datastore's LUN presented to the proxy) or Direct
NFS (the datastore's export mounted on the proxy). Either way the proxy sees the
datastore as a directory, and a snapshot's frozen disk is a plain file in it that
nobody writes while the snapshot lives — so it is read with pread straight into the
pipeline's buffers: no TLS, no HTTP, no server process between the disk and the
hash, and the read releases the GIL. The network mode (HTTPS range reads through the
host, drivers/vsphere.py) stays the fallback when the datastore is not visible.

Visibility is checked per disk before use, not assumed from configuration: the
directory must hold the disk's -flat file with exactly the disk's capacity. Anything
else (not mounted, another datastore mounted there, a stale mount) is "not visible"
and the caller falls back.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from drivers.errors import PermanentError, TransientError


def flat_relpath(file_name: str) -> str:
    """'[DS] dir/disk.vmdk' → 'dir/disk-flat.vmdk': where the bytes of a monolithic flat
    disk lie inside its datastore."""
    path = file_name.split("] ", 1)[1]
    if path.endswith(".vmdk") and not path.endswith("-flat.vmdk"):
        path = path[:-5] + "-flat.vmdk"
    return path


def visible_file(mount: Path, file_name: str, capacity: int) -> tuple[Path | None, str]:
    """The disk's file under the datastore's directory on this proxy, or None and why
    it is not usable."""
    rel = flat_relpath(file_name)
    if not mount.is_dir():
        return None, f"{mount} is not a directory on this proxy"
    path = (mount / rel).resolve()
    if mount.resolve() not in path.parents:
        return None, f"{rel} lies outside {mount}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"
    if size != capacity:
        return None, f"{path} has {size:,} bytes, the disk {capacity:,}"
    return path, ""


def _translate(exc: OSError, what: str) -> Exception:
    if exc.errno in (errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE):
        return TransientError(f"{what}: {exc}")
    return PermanentError(f"{what}: {exc}")


class DirectDisk:
    """A disk file read by pread from any thread (one descriptor, no shared offset)."""

    transport = "direct"

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, offset: int, length: int) -> bytearray:
        """Exactly `length` bytes at `offset` (within the disk)."""
        if offset < 0 or offset + length > self.size:
            raise PermanentError(f"read [{offset}, +{length}) outside the {self.size}-byte disk")
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        try:
            while got < length:
                n = os.preadv(self._fd, [view[got:]], offset + got)
                if n == 0:
                    raise PermanentError(f"{self.path} ends at byte {offset + got}, the disk "
                                         f"has {self.size}")
                got += n
        except OSError as exc:
            raise _translate(exc, f"read {self.path} at {offset + got}") from exc
        return buf

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_disk(path: Path, size: int, blocks: Iterable[bytes]) -> int:
    """Write a whole disk's bytes in order into its file; all-zero blocks become holes.

    The file is emptied first (truncate to 0, then to the disk's size: every byte reads
    as zero), so skipping a zero block leaves a hole instead of stale data. Returns the
    bytes actually written (the data, not the holes).
    """
    written = pos = 0
    zero = b""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _translate(exc, f"open {path} for writing") from exc
    try:
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
        for block in blocks:
            n = len(block)
            if len(zero) != n:
                zero = bytes(n)
            if block != zero:
                view = memoryview(block)
                done = 0
                while done < n:
                    done += os.pwrite(fd, view[done:], pos + done)
                written += n
            pos += n
        if pos != size:
            raise PermanentError(f"{pos:,} bytes given for a {size:,}-byte disk {path}")
        os.fsync(fd)
    except OSError as exc:
        raise _translate(exc, f"write {path} at {pos}") from exc
    finally:
        os.close(fd)
    return written

"""Atomic, durable file writes: temp file, fsync, rename, fsync of the directory.

A crash at any point leaves either the old file or the new one, never a torn one; that
is what lets the store say 'a chunk that exists is whole'.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, tmp: Path, *, sync_dir: bool = True) -> Iterator[int]:
    """A descriptor to write `path` through `tmp`: whole under its name on success
    (fsync, rename), nothing left on failure."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, tmp_dir: Path, *, sync_dir: bool = True) -> None:
    """Write `data` to `path` so that readers see all of it or nothing."""
    with atomic_file(path, tmp_dir / f"{path.name}.{uuid.uuid4().hex}.tmp",
                     sync_dir=sync_dir) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

"""Writing restored files under a target directory, and nowhere else.

Every path is opened component by component from the target's directory descriptor with
O_NOFOLLOW|O_DIRECTORY: a symlink already in the target (or planted by an earlier part of
the same restore) stops the restore of that path instead of being followed. Files are
written to a temporary name and renamed into place (a rename replaces a symlink, never
writes through it). Symlinks from the guest are created only when their target, read
relative to the link, stays inside the restore directory; device files, FIFOs and
sockets are never created.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from dpflow.errors import UserError

CONFLICTS = ("skip", "overwrite", "rename")


class UnsafePath(Exception):
    """A restore path that would leave the target or pass through a symlink."""


def _check_component(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise UnsafePath(f"refused path component {name!r}")


def _can_create(dfd: int) -> bool:
    """os.access says yes to root even on a read-only mount: try it."""
    name = f".dpflow-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd))
        os.unlink(name, dir_fd=dfd)
        return True
    except OSError:
        return False


class SafeTarget:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(f"restore target {self.root} is not usable: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK) or not _can_create(self.root_fd):
            os.close(self.root_fd)
            raise UserError(f"restore target {self.root} is not writable")
        self._dir_meta: dict[tuple[str, ...], tuple[int | None, int | None]] = {}

    def close(self) -> None:
        os.close(self.root_fd)

    def __enter__(self) -> SafeTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_dir(self, parts: tuple[str, ...], create: bool = True) -> int:
        fd = os.dup(self.root_fd)
        try:
            for name in parts:
                _check_component(name)
                try:
                    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePath(f"{'/'.join(parts)}: '{name}' is a symlink or not a "
                                         f"directory in the target; not followed") from exc
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _exists(dfd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def _free_name(dfd: int, name: str) -> str:
        for i in range(1, 10_000):
            cand = f"{name}.restored-{i}"
            if SafeTarget._exists(dfd, cand) is None:
                return cand
        raise UnsafePath(f"no free name for {name}")

    def mkdir(self, parts: tuple[str, ...], mode: int | None, mtime_ns: int | None) -> None:
        fd = self._open_dir(parts)
        os.close(fd)
        self._dir_meta[parts] = (mode, mtime_ns)

    def write_file(self, parts: tuple[str, ...], blocks: Iterable[bytes], mode: int | None,
                   mtime_ns: int | None, conflict: str) -> str:
        """'written', 'overwritten', 'skipped' or 'renamed:NAME'."""
        if conflict not in CONFLICTS:
            raise UserError(f"unknown conflict policy '{conflict}': use one of "
                            f"{', '.join(CONFLICTS)}")
        if not parts:
            raise UnsafePath("empty path")
        name = parts[-1]
        _check_component(name)
        dfd = self._open_dir(parts[:-1])
        try:
            status, final = "written", name
            old = self._exists(dfd, name)
            if old is not None:
                if conflict == "skip":
                    return "skipped"
                if conflict == "rename":
                    final = self._free_name(dfd, name)
                    status = f"renamed:{final}"
                elif stat.S_ISDIR(old.st_mode):
                    raise UnsafePath(f"{'/'.join(parts)} is a directory in the target")
                else:
                    status = "overwritten"
            tmp = f".{final[:200]}.dpflow-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=dfd)
            try:
                try:
                    for b in blocks:
                        view = memoryview(b)
                        while view:
                            view = view[os.write(fd, view):]
                    os.fchmod(fd, mode if mode is not None else 0o644)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
            return status
        finally:
            os.close(dfd)

    def symlink(self, parts: tuple[str, ...], target: str, conflict: str) -> str:
        """Only a relative link that stays inside the restore directory is created."""
        if not target or target.startswith(("/", "\\")) or "\x00" in target \
                or (len(target) > 1 and target[1] == ":"):
            return "refused: absolute symlink target"
        where = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target.replace("\\", "/")))
        if where == ".." or where.startswith("../") or where.startswith("/"):
            return "refused: symlink target outside the restore"
        dfd = self._open_dir(parts[:-1])
        try:
            name = parts[-1]
            _check_component(name)
            if self._exists(dfd, name) is not None:
                if conflict == "skip":
                    return "skipped"
                if conflict == "rename":
                    name = self._free_name(dfd, name)
                else:
                    os.unlink(name, dir_fd=dfd)
            os.symlink(target, name, dir_fd=dfd)
            return "written"
        finally:
            os.close(dfd)

    def finish_dirs(self) -> None:
        """Directory modes and mtimes last (deepest first), once their files are in."""
        meta = self._dir_meta
        for parts in sorted(meta, key=len, reverse=True):
            mode, mtime_ns = meta[parts]
            try:
                fd = self._open_dir(parts, create=False)
            except (OSError, UnsafePath):
                continue
            try:
                os.fchmod(fd, (mode if mode is not None else 0o755) | 0o700)
                if mtime_ns is not None:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)

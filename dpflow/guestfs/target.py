"""Writing restored files under a target directory, and nowhere else.

Every path is opened component by component from the target's directory descriptor with
O_NOFOLLOW|O_DIRECTORY: a symlink already in the target (or restored earlier by the same
restore) stops the restore of that path instead of being followed. Files are written to
a short temporary name (locked while written) and renamed into place (a rename replaces a
symlink, never writes through it); runs of zeros are left as holes. Temporary names an
interrupted restore left behind are removed the next time a restore writes into that
directory. Symlinks are created verbatim,
absolute or relative, and never followed afterwards; hard links are made with
follow_symlinks=False. Device files, FIFOs and sockets are never created.

A name longer than the target's limit (NAME_MAX, 255 bytes on Linux file systems) is
cut to fit and given '~' plus 16 hex digits of the BLAKE3 hash of the whole name, its
extension kept: the same name always gives the same short name, and every such change
is recorded in `name_changes`.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path

import blake3

from dpflow.errors import UserError

CONFLICTS = ("skip", "overwrite", "rename")
HOLE = 64 << 10  # zero runs of this granularity become holes


class UnsafePath(Exception):
    """A restore path that would leave the target or pass through a symlink."""


def _check_component(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise UnsafePath(f"refused path component {name!r}")


def _cannot_create(dfd: int) -> str | None:
    """Why nothing can be created here (None: it can). os.access says yes to root even on
    a read-only mount: try it."""
    name = f".dpflow-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd))
        os.unlink(name, dir_fd=dfd)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _encoded(name: str) -> bytes:
    return os.fsencode(name)


def fit_name(name: str, limit: int = 255) -> str:
    """`name` if it fits in `limit` bytes, else its head, '~', 16 hex digits of its BLAKE3
    hash and its extension (when short): deterministic, so links and repeats agree."""
    if len(_encoded(name)) <= limit:
        return name
    digest = "~" + blake3.blake3(_encoded(name)).hexdigest()[:16]
    stem, dot, ext = name.rpartition(".")
    tail = f".{ext}" if dot and stem and len(_encoded(ext)) <= 16 and "%" not in ext else ""
    room = limit - len(_encoded(digest + tail))
    head, used = [], 0
    i = 0
    while i < len(name):
        ch = name[i]
        # never cut an escape (%XX or %UXXXX) in two
        step = 6 if name.startswith("%U", i) else 3 if ch == "%" else 1
        piece = name[i:i + step]
        n = len(_encoded(piece))
        if used + n > room:
            break
        head.append(piece)
        used += n
        i += step
    return "".join(head) + digest + tail


class SafeTarget:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(f"restore target {self.root} is not usable: {exc.strerror}") from exc
        why = None if os.access(self.root, os.W_OK | os.X_OK) else "permission denied"
        why = why or _cannot_create(self.root_fd)
        if why is not None:
            os.close(self.root_fd)
            raise UserError(f"restore target {self.root} is not writable ({why}): give "
                            f"another --to directory")
        try:
            self.name_max = int(os.fpathconf(self.root_fd, "PC_NAME_MAX")) or 255
        except (OSError, ValueError):
            self.name_max = 255
        self._dir_meta: dict[tuple[str, ...], tuple[int | None, int | None]] = {}
        #: original path (escaped components) -> the name it was given on the target
        self.name_changes: dict[tuple[str, ...], str] = {}
        #: temporary files of an interrupted earlier restore, removed
        self.leftovers: list[str] = []
        self._swept: set[tuple[str, ...]] = set()

    def close(self) -> None:
        os.close(self.root_fd)

    def __enter__(self) -> SafeTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # names -------------------------------------------------------------------------
    def fit(self, name: str) -> str:
        return fit_name(name, self.name_max)

    def _map(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """The components as written on the target; every change recorded once."""
        out = []
        for i, name in enumerate(parts):
            _check_component(name)
            new = self.fit(name)
            if new != name:
                self.name_changes.setdefault(parts[:i + 1], new)
            out.append(new)
        return tuple(out)

    def _open_dir(self, parts: tuple[str, ...], create: bool = True) -> int:
        """A descriptor of the (mapped) directory `parts`, created as needed."""
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

    def _write_dir(self, parts: tuple[str, ...]) -> int:
        """The directory an object is written into; the first time, temporary files an
        interrupted restore left there are removed (and listed in `leftovers`)."""
        fd = self._open_dir(parts)
        if parts not in self._swept:
            self._swept.add(parts)
            try:
                self.leftovers += [f"{'/'.join((*parts, n))}" for n in _sweep(fd)]
            except OSError:
                pass  # a sweep is a courtesy: never the reason a restore fails
        return fd

    @staticmethod
    def _exists(dfd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _free_name(self, dfd: int, name: str) -> str:
        for i in range(1, 10_000):
            cand = self.fit(f"{name}.restored-{i}")
            if self._exists(dfd, cand) is None:
                return cand
        raise UnsafePath(f"no free name for {name}")

    def _place(self, dfd: int, parts: tuple[str, ...], conflict: str) -> tuple[str, str]:
        """(status, final name) for a new object at mapped `parts`, or ('skipped', '')."""
        if conflict not in CONFLICTS:
            raise UserError(f"unknown conflict policy '{conflict}': use one of "
                            f"{', '.join(CONFLICTS)}")
        name = parts[-1]
        old = self._exists(dfd, name)
        if old is None:
            return "written", name
        if conflict == "skip":
            return "skipped", ""
        if conflict == "rename":
            final = self._free_name(dfd, name)
            return f"renamed:{final}", final
        if stat.S_ISDIR(old.st_mode):
            raise UnsafePath(f"{'/'.join(parts)} is a directory in the target")
        return "overwritten", name

    @staticmethod
    def _tmp_name() -> str:
        return f".dpflow-{secrets.token_hex(8)}.tmp"

    # objects -----------------------------------------------------------------------
    def mkdir(self, parts: tuple[str, ...], mode: int | None, mtime_ns: int | None) -> None:
        mapped = self._map(parts)
        os.close(self._open_dir(mapped))
        self._dir_meta[mapped] = (mode, mtime_ns)

    def write_file(self, parts: tuple[str, ...], blocks: Iterable[bytes], mode: int | None,
                   mtime_ns: int | None, conflict: str) -> str:
        """'written', 'overwritten', 'skipped' or 'renamed:NAME'."""
        if not parts:
            raise UnsafePath("empty path")
        mapped = self._map(parts)
        dfd = self._write_dir(mapped[:-1])
        try:
            status, final = self._place(dfd, mapped, conflict)
            if status == "skipped":
                return status
            tmp = self._tmp_name()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=dfd)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # in use: no sweep removes it
                    _write_sparse(fd, blocks)
                    os.fchmod(fd, mode if mode is not None else 0o644)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(dfd, tmp)
                raise
            return status
        finally:
            os.close(dfd)

    def symlink(self, parts: tuple[str, ...], target: str, conflict: str,
                mtime_ns: int | None = None) -> str:
        """The link exactly as the guest had it (absolute too): it is never followed by
        this restore, since every later path is opened with O_NOFOLLOW."""
        if not target or "\x00" in target:
            return "refused: empty symlink target or one holding NUL"
        mapped = self._map(parts)
        dfd = self._write_dir(mapped[:-1])
        try:
            status, final = self._place(dfd, mapped, conflict)
            if status == "skipped":
                return status
            tmp = self._tmp_name()
            os.symlink(target, tmp, dir_fd=dfd)
            try:
                if mtime_ns is not None:
                    os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dfd, follow_symlinks=False)
                os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(dfd, tmp)
                raise
            return status
        finally:
            os.close(dfd)

    def link(self, existing: tuple[str, ...], parts: tuple[str, ...], conflict: str) -> str:
        """A hard link at `parts` to the file restored at `existing` (a path as returned
        by `written_path`); the link itself is never followed."""
        mapped = self._map(parts)
        sfd = self._open_dir(existing[:-1], create=False)
        try:
            dfd = self._write_dir(mapped[:-1])
            try:
                status, final = self._place(dfd, mapped, conflict)
                if status == "skipped":
                    return status
                tmp = self._tmp_name()
                os.link(existing[-1], tmp, src_dir_fd=sfd, dst_dir_fd=dfd,
                        follow_symlinks=False)
                try:
                    os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
                finally:
                    # also after success: a rename onto another name of the same file
                    # does nothing and leaves the temporary name
                    _unlink_quietly(dfd, tmp)
                return status
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def written_path(self, parts: tuple[str, ...], status: str) -> tuple[str, ...]:
        """Where an object of `parts` went on the target, given its write status."""
        mapped = self._map(parts)
        if status.startswith("renamed:"):
            return (*mapped[:-1], status.split(":", 1)[1])
        return mapped

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


_TMP = re.compile(r"\.dpflow-[0-9a-f]{16}\.tmp")
STALE_S = 60  # a temporary name unchanged this long, and unlocked, belongs to no restore


def _sweep(dfd: int) -> list[str]:
    """Remove the temporary names no live restore holds: unchanged for STALE_S (every
    write changes a file's ctime) and, for files, not locked (a writer holds its lock
    until the rename)."""
    removed = []
    for name in os.listdir(dfd):
        if not _TMP.fullmatch(name):
            continue
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if time.time() - st.st_ctime < STALE_S:
            continue
        if stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(name, dir_fd=dfd)
            except OSError:
                continue  # being written right now
            finally:
                os.close(fd)
        elif stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=dfd)
        else:
            continue
        removed.append(name)
    return removed


def _unlink_quietly(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


@functools.lru_cache(maxsize=8)
def _zeros(n: int) -> bytes:
    return bytes(n)


def _write_sparse(fd: int, blocks: Iterable[bytes]) -> int:
    """The bytes at their offsets, runs of zeros (HOLE-sized pieces) skipped as holes, the
    data between them written in one call each, the size set last."""
    pos = 0
    for b in blocks:
        data = b if isinstance(b, bytes) else bytes(b)
        n = len(data)
        if n == 0 or data == _zeros(n):
            pos += n
            continue
        view, run = memoryview(data), None
        for at in range(0, n, HOLE):
            end = min(at + HOLE, n)
            if data[at] == 0 and data[end - 1] == 0 and data[at:end] == _zeros(end - at):
                if run is not None:
                    _pwrite_all(fd, view[run:at], pos + run)
                    run = None
            elif run is None:
                run = at
        if run is not None:
            _pwrite_all(fd, view[run:], pos + run)
        pos += n
    os.ftruncate(fd, pos)
    return pos


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        w = os.pwrite(fd, view, offset)
        view, offset = view[w:], offset + w

"""One interface over NTFS (dissect.ntfs) and ext2/3/4 (dissect.extfs).

`walk` yields every object of a volume once, depth first, with escaped names (names.py);
entries named '.' or '..' beyond a directory's own, and a second entry of one name, are
forged: refused and reported;
directories already seen are not entered again (a crafted hard link to a directory
cannot loop the walk), symlinks and reparse points are recorded, never followed, and
objects that fail to parse are reported in `problems` and skipped.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dpflow.errors import DpflowError
from dpflow.guestfs.names import escape_name, join_path

MAX_DEPTH = 256
#: NTFS records below this number are the file system's own metadata ($MFT, $Secure ...)
NTFS_FIRST_USER_RECORD = 24

_EXT_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "device", stat.S_IFBLK: "device", stat.S_IFIFO: "fifo",
              stat.S_IFSOCK: "socket"}


@dataclass
class Entry:
    """One file-system object as the catalog records it (names escaped)."""

    volume: str
    path: str
    kind: str  # file | dir | symlink | device | fifo | socket | other
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int | None = None
    mode: int | None = None  # permission bits (ext); None on NTFS
    uid: int | None = None
    gid: int | None = None
    owner: str | None = None  # 'uid:gid' on ext, the owner SID on NTFS
    attributes: int | None = None  # NTFS file attributes
    inode: int = 0
    nlink: int = 1
    target: str | None = None  # symlink / reparse point target, as the guest wrote it
    node: Any = field(default=None, repr=False, compare=False)


Selector = Callable[[str, bool], bool]  # (path, is_dir) -> take it / enter it


def _reraise_reader_failure(fh: Any, exc: BaseException) -> None:
    """Errors of the disk reader (network, store) are the session's, not the volume's."""
    if isinstance(exc, DpflowError):
        raise exc
    failure = getattr(fh, "failure", None)
    if failure is not None:
        raise failure from exc


class GuestVolume:
    """A file system on one volume. Subclasses: ExtVolume, NtfsVolume."""

    fs_type = "?"

    def __init__(self, name: str, stream: BinaryIO, device: Any) -> None:
        self.name, self.stream, self.device = name, stream, device
        self.problems: list[str] = []
        self.forged: list[str] = []  # entries refused as forged (also in problems)
        #: where the volume starts on the device (None: not a plain range, e.g. LVM)
        self.base_offset: int | None = None

    # subclass interface ------------------------------------------------------------
    def _root(self) -> Any:
        raise NotImplementedError

    def _children(self, node: Any) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def _entry(self, path: str, node: Any) -> Entry:
        raise NotImplementedError

    def _dir_key(self, node: Any) -> int:
        raise NotImplementedError

    def open(self, entry: Entry) -> BinaryIO:
        raise NotImplementedError

    def extents(self, entry: Entry) -> list[tuple[int | None, int]] | None:
        """A file's data as (device offset or None for zeros, length) ranges, so it can be
        read in parallel straight from the device; None: read it through open()."""
        return None

    def _runs_to_extents(self, runs: list[tuple[int | None, int]], unit: int,
                         size: int) -> list[tuple[int | None, int]] | None:
        if self.base_offset is None:
            return None
        out: list[tuple[int | None, int]] = []
        left = size
        for start, count in runs:
            if left <= 0:
                break
            n = min(count * unit, left)
            out.append((None if start is None else self.base_offset + start * unit, n))
            left -= n
        if left > 0:
            out.append((None, left))  # beyond the last run: zeros, as the stream reads it
        return out

    # shared -------------------------------------------------------------------------
    def _problem(self, path: str, exc: BaseException) -> None:
        _reraise_reader_failure(self.device, exc)
        self.problems.append(f"{self.name}:{path}: {type(exc).__name__}: {exc}"[:300])

    def walk(self, select: Selector | None = None) -> Iterator[Entry]:
        """Every object below the root; `select(path, is_dir)` prunes (dirs) and filters."""
        root = self._root()
        seen = {self._dir_key(root)}
        stack: list[tuple[tuple[str, ...], Any]] = [((), root)]
        while stack:
            parts, node = stack.pop()
            try:
                children = sorted(self._children(node), key=lambda c: c[0])
            except Exception as exc:  # noqa: BLE001 - a damaged directory, reported
                self._problem(join_path(parts), exc)
                continue
            subdirs = []
            previous = None
            for name, child in children:
                cparts = (*parts, escape_name(name))
                path = join_path(cparts)
                forged = None
                if name in (".", ".."):  # the file system's own links are not listed
                    forged = f"{join_path(parts)}: forged directory entry {name!r}"
                elif name == previous:  # sorted: a repeated name follows its first
                    forged = f"{path}: a second directory entry of that name"
                previous = name
                if forged is not None:
                    self.forged.append(f"{self.name}:{forged}: refused")
                    self.problems.append(self.forged[-1])
                    continue
                try:
                    entry = self._entry(path, child)
                except Exception as exc:  # noqa: BLE001 - a damaged record, reported
                    self._problem(path, exc)
                    continue
                is_dir = entry.kind == "dir"
                if select is not None and not select(path, is_dir):
                    continue
                if is_dir:
                    key = self._dir_key(child)
                    if key in seen:
                        self.problems.append(f"{self.name}:{path}: directory already seen "
                                             f"(hard link to a directory?): not entered")
                        continue
                    if len(cparts) >= MAX_DEPTH:
                        self.problems.append(f"{self.name}:{path}: deeper than {MAX_DEPTH}")
                        continue
                    seen.add(key)
                    subdirs.append((cparts, child))
                yield entry
            stack.extend(reversed(subdirs))

    def lookup(self, parts: tuple[str, ...]) -> Entry:
        """The object at escaped `parts` (FileNotFoundError if none); no symlink followed."""
        node = self._root()
        for i, want in enumerate(parts):
            for name, child in self._children(node):
                if name not in (".", "..") and escape_name(name) == want:
                    node = child
                    break
            else:
                raise FileNotFoundError(join_path(parts[:i + 1]))
            if i < len(parts) - 1 and self._entry(join_path(parts[:i + 1]), node).kind != "dir":
                raise FileNotFoundError(join_path(parts[:i + 1]))
        return self._entry(join_path(parts), node)


class ExtVolume(GuestVolume):
    fs_type = "ext"

    def __init__(self, name: str, stream: BinaryIO, device: Any) -> None:
        from dissect.extfs import ExtFS

        super().__init__(name, stream, device)
        self.fs = ExtFS(stream)
        self.fs_type = {2: "ext2", 3: "ext3"}.get(self._generation(), "ext4")

    def _generation(self) -> int:
        sb = self.fs.sb
        if sb.s_feature_incompat & 0x40:  # extents
            return 4
        return 3 if sb.s_feature_compat & 0x4 else 2  # has_journal

    def _root(self) -> Any:
        return self.fs.get_inode(2)

    def _dir_key(self, node: Any) -> int:
        return int(node.inum)

    def _children(self, node: Any) -> Iterator[tuple[str, Any]]:
        """Entries in disk order; the directory's own '.' and '..' (its first two) are left
        out, and any further entry so named is passed on for the walk to refuse."""
        own = {".", ".."}
        for child in node.iterdir():
            if child.filename in own:
                own.discard(child.filename)
                continue
            if child.inum == 0:
                continue
            yield child.filename, child

    def _entry(self, path: str, node: Any) -> Entry:
        ino = node.inode
        fmt = stat.S_IFMT(ino.i_mode)
        kind = _EXT_KINDS.get(fmt, "other")
        uid = ino.i_uid | (ino.i_uid_high << 16)
        gid = ino.i_gid | (ino.i_gid_high << 16)
        e = Entry(volume=self.name, path=path, kind=kind,
                  size=int(node.size) if kind in ("file", "symlink") else 0,
                  mtime_ns=int(node.mtime_ns), ctime_ns=int(node.ctime_ns),
                  mode=stat.S_IMODE(ino.i_mode), uid=uid, gid=gid, owner=f"{uid}:{gid}",
                  inode=int(node.inum), nlink=int(ino.i_links_count), node=node)
        if kind == "symlink":
            e.target = node.link
        return e

    def open(self, entry: Entry) -> BinaryIO:
        stream: BinaryIO = entry.node.open()
        return stream

    def extents(self, entry: Entry) -> list[tuple[int | None, int]] | None:
        flags = entry.node.inode.i_flags
        if entry.kind != "file" or not flags & 0x00080000 or flags & 0x10000000:
            return None  # block-mapped (ext2/3) or inline data: through the stream
        return self._runs_to_extents(entry.node.dataruns(), self.fs.block_size, entry.size)


class NtfsVolume(GuestVolume):
    fs_type = "ntfs"

    def __init__(self, name: str, stream: BinaryIO, device: Any) -> None:
        from dissect.ntfs import NTFS

        super().__init__(name, stream, device)
        self.fs = NTFS(stream)

    def _root(self) -> Any:
        return self.fs.mft.get(5)

    def _dir_key(self, node: Any) -> int:
        return int(node.segment)

    def _children(self, node: Any) -> Iterator[tuple[str, Any]]:
        for ie in node.iterdir(ignore_dos=True):
            name = ie.attribute.file_name
            rec = ie.dereference()
            if rec.segment < NTFS_FIRST_USER_RECORD:
                continue  # '.', $MFT, $Extend ...: the file system's own records
            yield name, rec

    def _owner(self, security_id: int) -> str | None:
        try:
            sd = self.fs.secure.lookup(security_id) if self.fs.secure else None
            return str(sd.owner) if sd is not None and sd.owner is not None else None
        except Exception:  # noqa: BLE001 - an owner we cannot read is left out
            return None

    def _entry(self, path: str, rec: Any) -> Entry:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        si = rec.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION][0]
        kind = "dir" if rec.is_dir() else "file"
        target = None
        if rec.is_reparse_point():
            kind = "symlink"
            try:
                target = rec.reparse_point_substitute_name
            except Exception:  # noqa: BLE001 - an unknown reparse tag
                target = ""
        size = rec.size() if kind == "file" and rec.has_stream("") else 0
        return Entry(volume=self.name, path=path, kind=kind, size=int(size),
                     mtime_ns=int(si.last_modification_time_ns),
                     ctime_ns=int(si.last_change_time_ns), attributes=int(si.file_attributes),
                     owner=self._owner(int(getattr(si, "security_id", 0) or 0)),
                     inode=int(rec.segment),
                     nlink=len(rec.filenames(ignore_dos=True)) or 1, target=target, node=rec)

    def open(self, entry: Entry) -> BinaryIO:
        stream: BinaryIO = entry.node.open()
        return stream

    def extents(self, entry: Entry) -> list[tuple[int | None, int]] | None:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        if entry.kind != "file":
            return None
        attrs = [a for a in entry.node.attributes[ATTRIBUTE_TYPE_CODE.DATA] if a.name == ""]
        if len(attrs) != 1 or attrs[0].resident or attrs[0].header.flags & 0x40FF:
            return None  # resident, compressed, encrypted or spread over records
        return self._runs_to_extents(attrs[0].dataruns(), self.fs.cluster_size, entry.size)

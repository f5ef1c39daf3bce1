"""Volumes of one guest disk: the whole disk, partitions (MBR, GPT), LVM2 logical volumes.

Each volume is probed for a file system it can read; what cannot be read (unknown type,
damaged superblock, swap, an empty partition table) is reported with the reason and the
walk goes on with the other volumes. Only reader failures (the disk itself) propagate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from dissect.util.stream import RangeStream

from dpflow.guestfs.fs import GuestVolume, _reraise_reader_failure

#: partition types that hold no file system of their own
_CONTAINERS = {0x00, 0x05, 0x0F, 0x85}
_LVM_GUID = "e6d6d379-f507-44c2-a23c-238f2a3df928"


@dataclass
class VolumeReport:
    name: str
    offset: int
    size: int
    fs_type: str | None  # ntfs, ext4 ... or None when unreadable
    error: str = ""


def _probe(head: bytes) -> str | None:
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext"
    if len(head) >= 1024 and head[512:520] == b"LABELONE":
        return "lvm"
    if len(head) >= 4096 and head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    return None


def _open_fs(name: str, stream: BinaryIO, device: Any, kind: str) -> GuestVolume:
    from dpflow.guestfs.fs import ExtVolume, NtfsVolume

    return (NtfsVolume if kind == "ntfs" else ExtVolume)(name, stream, device)


def _volume(name: str, device: Any, offset: int, size: int,
            out: list[tuple[VolumeReport, GuestVolume | None]]) -> None:
    stream = RangeStream(device, offset, size)
    try:
        stream.seek(0)
        kind = _probe(stream.read(4096))
        if kind in ("ntfs", "ext"):
            vol = _open_fs(name, stream, device, kind)
            vol.base_offset = offset
            out.append((VolumeReport(name, offset, size, vol.fs_type), vol))
        elif kind == "lvm":
            _lvm(name, stream, device, offset, size, out)
        else:
            what = "swap space" if kind == "swap" else "unknown or no file system"
            out.append((VolumeReport(name, offset, size, None, what), None))
    except Exception as exc:  # noqa: BLE001 - a damaged volume is reported, not raised
        _reraise_reader_failure(device, exc)
        out.append((VolumeReport(name, offset, size, None,
                                 f"damaged: {type(exc).__name__}: {exc}"[:300]), None))


def _lvm(name: str, stream: BinaryIO, device: Any, offset: int, size: int,
         out: list[tuple[VolumeReport, GuestVolume | None]]) -> None:
    from dissect.volume.lvm import LVM2

    lvm = LVM2(stream)
    out.append((VolumeReport(name, offset, size, "lvm2-pv"), None))
    for lv in lvm.volume_group.lv:
        if not lv.is_visible:
            continue
        lv_name = f"{name}-{lvm.volume_group.name}-{lv.name}"
        lv_stream = lv.open()
        try:
            lv_stream.seek(0)
            kind = _probe(lv_stream.read(4096))
            if kind in ("ntfs", "ext"):
                vol = _open_fs(lv_name, lv_stream, device, kind)
                out.append((VolumeReport(lv_name, -1, getattr(lv_stream, "size", 0) or 0,
                                         vol.fs_type), vol))
            else:
                out.append((VolumeReport(lv_name, -1, 0, None, "unknown or no file system"),
                            None))
        except Exception as exc:  # noqa: BLE001
            _reraise_reader_failure(device, exc)
            out.append((VolumeReport(lv_name, -1, 0, None,
                                     f"damaged: {type(exc).__name__}: {exc}"[:300]), None))


def discover(device: Any, size: int, disk_index: int = 0
             ) -> list[tuple[VolumeReport, GuestVolume | None]]:
    """(report, volume or None) for every volume of one disk (`device`: a RangeFile)."""
    from dissect.volume.disk import Disk

    out: list[tuple[VolumeReport, GuestVolume | None]] = []
    base = f"d{disk_index}"
    device.seek(0)
    head = device.read(4096)
    if _probe(head) in ("ntfs", "ext", "lvm"):  # a file system on the whole disk
        _volume(base, device, 0, size, out)
        return out
    if head[510:512] != b"\x55\xaa":
        what = "blank disk" if not head.strip(b"\x00") else "no partition table or file system"
        out.append((VolumeReport(base, 0, size, None, what), None))
        return out
    try:
        device.seek(0)
        parts = Disk(device).partitions
    except Exception as exc:  # noqa: BLE001
        _reraise_reader_failure(device, exc)
        out.append((VolumeReport(base, 0, size, None,
                                 f"unreadable partition table: {exc}"[:300]), None))
        return out
    for p in parts:
        if isinstance(p.type, int) and p.type in _CONTAINERS:
            continue
        if str(p.type) == "00000000-0000-0000-0000-000000000000":
            continue
        if p.offset + p.size > size or p.size <= 0:
            out.append((VolumeReport(f"{base}p{p.number}", p.offset, p.size, None,
                                     "partition lies beyond the end of the disk"), None))
            continue
        _volume(f"{base}p{p.number}", device, p.offset, p.size, out)
    return out

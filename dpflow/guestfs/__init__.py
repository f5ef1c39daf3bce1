"""Guest file systems read on the proxy, without mounting (the seed's VCBfile, and more).

Layers, each over the one below:

    reader    read(offset, length) of a snapshot disk (hypervisor driver) or of a stored
              image version (ImageDisk: chunks fetched on demand, small cache)
    blockdev  RangeFile: a seekable file object over a reader, with a small block cache
    volumes   partition tables (MBR, GPT) and LVM2 found by dissect.volume; each volume
              probed for NTFS (dissect.ntfs) or ext2/3/4 (dissect.extfs); unknown or
              damaged volumes reported, never raised
    fs        one walk/lookup/open interface over both file systems, with names escaped
              so that no guest name can be a path separator, '.', '..' or hold a NUL
    target    SafeTarget: writes under a restore directory through directory file
              descriptors, never following a symlink and never leaving the directory;
              names too long for the target shortened (head~hash.ext), holes kept
    restore   Restorer: objects one by one into a SafeTarget (hard links as links,
              symlinks verbatim), tallied; one odd object never stops the restore
"""

from dpflow.guestfs.blockdev import ImageDisk, RangeFile
from dpflow.guestfs.fs import Entry, GuestVolume
from dpflow.guestfs.names import escape_name, split_path
from dpflow.guestfs.target import SafeTarget, UnsafePath
from dpflow.guestfs.volumes import VolumeReport, discover

__all__ = ["Entry", "GuestVolume", "ImageDisk", "RangeFile", "SafeTarget", "UnsafePath",
           "VolumeReport", "discover", "escape_name", "split_path"]

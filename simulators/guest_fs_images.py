"""Guest file systems for the file-level tests and demo, made with the real tools.

ext4 with `mkfs.ext4 -d` (directories, symlinks, hard links, device nodes, modes and
mtimes taken from a staging tree), NTFS with `mkntfs` + `ntfscp` (files in the root
only: ntfs-3g's offline tools cannot create directories), disks with MBR or GPT
partition tables written by `sfdisk`. `patch_name` rewrites a name inside an image in
place, which is how the hostile images get names no tool would write; `hostile_disk`
combines such names with escaping links, devices and damaged structures (never mounted).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20
FIRST_LBA = 2048  # partitions start at 1 MiB, as every partitioning tool does

Stage = Callable[[Path], None]


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise RuntimeError(f"{tool} not found: install Debian's {package} (./dev setup)")


def ext4_from_tree(path: Path, size: int, stage: Stage, *, block_size: int = 4096) -> None:
    """An ext4 image of `size` bytes whose content is what `stage(root)` creates."""
    _need("mkfs.ext4", "e2fsprogs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage(root)
        with open(path, "wb") as out:
            out.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", str(block_size), "-E",
                        "root_owner=0:0", "-d", str(root), str(path)],
                       check=True, capture_output=True)


def write_tree(root: Path, files: dict[str, bytes], mtime: int | None = None) -> None:
    for rel, data in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        if mtime is not None:
            os.utime(f, (mtime, mtime))


def ntfs_with_files(path: Path, size: int, files: dict[str, bytes],
                    label: str = "WINGUEST") -> None:
    """An NTFS image with `files` (flat names) in its root directory."""
    _need("mkntfs", "ntfs-3g")
    with open(path, "wb") as out:
        out.truncate(size)
    subprocess.run(["mkntfs", "-q", "-F", "-f", "-L", label, "-s", "512", "-c", "4096",
                    str(path)], check=True, capture_output=True)
    add_ntfs_files(path, files)


def add_ntfs_files(path: Path, files: dict[str, bytes]) -> None:
    """Write (or overwrite) root-directory files of an NTFS image, as the guest would."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if "/" in name:
                raise ValueError("ntfscp cannot create directories: flat names only")
            src = Path(tmp) / "f"
            src.write_bytes(data)
            subprocess.run(["ntfscp", "-f", "-q", str(path), str(src), name], check=True,
                           capture_output=True)


def partitioned_disk(path: Path, size: int, table: str,
                     volumes: list[tuple[Path, str]]) -> list[int]:
    """A disk of `size` bytes with a `table` ('mbr' or 'gpt') partition table holding one
    partition per (image, kind) in order, kind 'linux' or 'ntfs'; returns the offsets."""
    _need("sfdisk", "fdisk")
    with open(path, "wb") as out:
        out.truncate(size)
    lines, offsets, lba = [], [], FIRST_LBA
    for img, kind in volumes:
        sectors = (img.stat().st_size + 511) // 512
        if table == "gpt":
            t = "0FC63DAF-8483-4772-8E79-3D69D8477DE4" if kind == "linux" else \
                "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
        else:
            t = "83" if kind == "linux" else "7"
        room = (sectors + 2047) // 2048 * 2048 + 2048  # sfdisk may trim a last sector
        lines.append(f"start={lba}, size={room}, type={t}")
        offsets.append(lba * 512)
        lba += room
    label = "gpt" if table == "gpt" else "dos"
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
                   input=f"label: {label}\n" + "\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True)
    with open(path, "r+b") as out:
        for (img, _), off in zip(volumes, offsets, strict=True):
            with open(img, "rb") as inp:
                out.seek(off)
                shutil.copyfileobj(inp, out, 4 * MiB)
    return offsets


def patch_name(image: Path, old: str, new: str, *, utf16: bool) -> int:
    """Replace every occurrence of name `old` by `new` (same length) inside an image;
    returns how many were replaced. NTFS names are UTF-16LE (MFT record and index)."""
    enc_old = old.encode("utf-16-le") if utf16 else old.encode()
    enc_new = new.encode("utf-16-le") if utf16 else new.encode("utf-8", "surrogateescape")
    if len(enc_old) != len(enc_new):
        raise ValueError("a patched name must keep its length")
    data = bytearray(image.read_bytes())
    n = data.count(enc_old)
    data = data.replace(enc_old, enc_new)
    image.write_bytes(bytes(data))
    return n


# --- hostile images: what a compromised or broken guest can hand the proxy -------------
HOSTILE_KINDS = ("escaping-links", "odd-names", "overlong-names", "devices",
                 "forged-entries", "shadowed-link", "damaged-table", "damaged-superblock",
                 "damaged-metadata", "ntfs-odd-names")


def _unique(rng: random.Random, prefix: str, n: int) -> str:
    """A name of `n` characters found nowhere else in the image, to be patched later."""
    return prefix + "".join(rng.choice("0123456789") for _ in range(n - 1))


def hostile_disk(path: Path, rng: random.Random, outside: Path, kinds: set[str]) -> None:
    """A partitioned disk whose ext4 (and NTFS) volumes carry the hostile `kinds`: links
    out of any restore directory (to `outside`), names no tool writes, devices, forged
    '..' entries, a link shadowing a directory of the same name, damaged structures."""
    work = path.parent / f"{path.name}.parts"
    work.mkdir(exist_ok=True)
    patches: list[tuple[str, str]] = []

    def stage(root: Path) -> None:
        write_tree(root, {"plain/ok.txt": b"ok", "plain/zero.bin": bytes(rng.randrange(1, 3)
                                                                         * MiB)})
        if "escaping-links" in kinds:
            os.symlink(str(outside / "abs-pwned"), root / "abs-link")
            os.symlink("../" * rng.randrange(3, 9) + str(outside).lstrip("/") + "/rel-pwned",
                       root / "plain/rel-link")
            os.symlink(str(outside), root / "to-outside")
        if "odd-names" in kinds:
            for name in (b"\xff\xfe bad utf8", b"pct%41name", b"tab\tand\x01ctl",
                         b"back\\slash", "ünïcødé".encode()):
                with open(os.path.join(os.fsencode(root / "plain"), name), "wb") as f:
                    f.write(name)
        if "overlong-names" in kinds:
            for i, unit in enumerate((b"\\", b"\xff", "€".encode())):
                name = os.path.join(os.fsencode(root), unit * (255 // len(unit)))
                with open(name, "wb") as f:
                    f.write(b"long")
                os.link(name, root / f"plain/hard-link-{i}")  # links to a shortened name
        if "devices" in kinds:
            os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            os.mknod(root / "sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
            os.mkfifo(root / "fifo")
        if "forged-entries" in kinds:
            dot, slash = _unique(rng, "Q", 2), _unique(rng, "R", 3)
            write_tree(root, {f"plain/{dot}": b"dotdot", f"plain/{slash}": b"slash"})
            patches.extend([(dot, ".."), (slash, slash[0] + "/" + slash[2])])
        if "shadowed-link" in kinds:
            real = _unique(rng, "S", 6)
            os.symlink(str(outside), root / f"{real[:-1]}Z")
            write_tree(root, {f"{real}/shadow-pwned": b"through the link?"})
            patches.append((real, f"{real[:-1]}Z"))  # a directory with the link's name

    ext = work / "ext4.img"
    ext4_from_tree(ext, 16 * MiB, stage, block_size=1024)
    for old, new in patches:
        patch_name(ext, old, new, utf16=False)
    vols = [(ext, "linux")]
    if "ntfs-odd-names" in kinds:
        ntfs = work / "ntfs.img"
        names = {"AsB.txt": b"slash", "QQ": b"dotdot", "€" * 255: b"long", "ok.txt": b"ok"}
        ntfs_with_files(ntfs, 8 * MiB, names)
        patch_name(ntfs, "AsB.txt", "A/B.txt", utf16=True)
        patch_name(ntfs, "QQ", "..", utf16=True)
        vols.append((ntfs, "ntfs"))
    offsets = partitioned_disk(path, 32 * MiB, rng.choice(["mbr", "gpt"]), vols)
    with open(path, "r+b") as f:
        if "damaged-superblock" in kinds:
            f.seek(offsets[0] + 1024 + rng.randrange(0, 200))
            f.write(rng.randbytes(rng.randrange(4, 64)))
        if "damaged-metadata" in kinds:  # group descriptors, bitmaps, inode tables
            for _ in range(rng.randrange(1, 20)):
                f.seek(offsets[0] + rng.randrange(2048, 512 * 1024))
                f.write(rng.randbytes(rng.randrange(1, 256)))
        if "damaged-table" in kinds:
            f.seek(rng.choice([446, 512, 1024]) + rng.randrange(0, 60))
            f.write(rng.randbytes(rng.randrange(2, 40)))
    shutil.rmtree(work)

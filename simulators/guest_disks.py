"""Real guest disk contents for tests and the demo: file systems and data, never mounted.

An ext4 file system made by `mkfs.ext4 -d` from generated files, followed by a random
region and zeros: the mix a backup meets (metadata, data, unallocated space).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

MiB = 1 << 20


def make_ext4(path: Path, size: int, files: dict[str, bytes]) -> None:
    """An ext4 image of `size` bytes holding `files` (relative path → content)."""
    if shutil.which("mkfs.ext4") is None:
        raise RuntimeError("mkfs.ext4 not found: install Debian's e2fsprogs (./dev setup)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, data in files.items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        with open(path, "wb") as out:
            out.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(root),
                        str(path)], check=True, capture_output=True)


def demo_files(seed: int, budget: int) -> dict[str, bytes]:
    """Log-like and binary files, about `budget` bytes in all."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    used = 0
    for i in range(10_000):
        if used >= budget:
            break
        if i % 3 == 0:
            body = "".join(f"{i:04d} INFO service started pid={rng.randint(1, 65535)}\n"
                           for _ in range(rng.randint(50, 2000))).encode()
            files[f"var/log/app{i}.log"] = body
        else:
            files[f"srv/data/blob{i}.bin"] = rng.randbytes(rng.randint(1, 512) * 1024)
        used += len(files[next(reversed(files))])
    files["etc/hostname"] = f"guest-{seed}\n".encode()
    return files


def make_guest_disk(path: Path, size: int, seed: int) -> None:
    """ext4 in the first quarter, random bytes in the second, zeros in the rest."""
    fs_size = max(8 * MiB, size // 4)
    make_ext4(path, fs_size, demo_files(seed, fs_size // 2))
    rng = random.Random(seed + 1)
    with open(path, "r+b") as f:
        f.truncate(size)
        f.seek(fs_size)
        remaining = min(size // 4, size - fs_size)
        while remaining > 0:
            n = min(remaining, 4 * MiB)
            f.write(rng.randbytes(n))
            remaining -= n

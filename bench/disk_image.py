"""A realistic VM disk for benchmarks: zero, text-like and random extents, seeded.

≈35 % zero extents, ≈35 % compressible log-like text, ≈30 % random, in 1–4 MiB
extents, shuffled with a fixed seed, so every tool is measured on the same bytes.

`make_next_day` derives the next day's disk from it (rewritten 64 KiB blocks and one
region where a file grew in the middle); `make_sparse_disk` makes a mostly-hole disk
for the memory test. Every writer here is sparse-aware: zero ranges stay holes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
from pathlib import Path

MiB = 1 << 20
BLOCK = 64 << 10  # the CBT block of the simulator
_PIECE = 4 * MiB

_WORDS = [b"INFO", b"WARN", b"request", b"served", b"user", b"session", b"db", b"GET",
          b"/api/v1/items", b"200", b"latency_ms", b"cache", b"hit", b"miss"]


def _text(rng: random.Random, n: int) -> bytes:
    lines = []
    length = 0
    while length < n:
        line = b"%d %s %s\n" % (rng.randint(10**9, 10**10), b" ".join(rng.choices(_WORDS, k=8)),
                                 rng.randbytes(4).hex().encode())
        lines.append(line)
        length += len(line)
    return b"".join(lines)[:n]


def _fill(rng: random.Random, n: int) -> bytes:
    """New data for a rewritten range: text-like or random, half and half."""
    return _text(rng, n) if rng.random() < 0.5 else rng.randbytes(n)


def make_disk(path: Path, size: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    extents: list[tuple[str, int]] = []
    total = 0
    while total < size:
        n = min(rng.randint(1, 4) * MiB, size - total)
        kind = rng.choices(["zero", "text", "random"], weights=[35, 35, 30])[0]
        extents.append((kind, n))
        total += n
    rng.shuffle(extents)
    with open(path, "wb") as f:
        f.truncate(size)
        for kind, n in extents:
            if kind == "zero":
                f.seek(n, 1)
            elif kind == "random":
                f.write(rng.randbytes(n))
            else:
                f.write(_text(rng, n))


def make_sparse_disk(path: Path, size: int, data_bytes: int, seed: int = 44) -> None:
    """A `size`-byte disk that is all holes except ≈`data_bytes` of text/random extents
    (1–4 MiB, MiB-aligned) spread over it: a big, mostly empty thin disk."""
    rng = random.Random(seed)
    slots = size // MiB
    with open(path, "wb") as f:
        f.truncate(size)
        written = 0
        used: set[int] = set()
        while written < min(data_bytes, size // 2):
            n = rng.randint(1, 4)
            start = rng.randrange(0, max(1, slots - n))
            if any(s in used for s in range(start, start + n)):
                continue
            used.update(range(start, start + n))
            f.seek(start * MiB)
            f.write(_fill(rng, n * MiB))
            written += n * MiB


# --- sparse-aware file helpers -------------------------------------------------------

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _punch(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset+length) a hole (zeros written if the FS cannot punch)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        os.pwrite(fd, bytes(length), offset)


def write_sparse(fd: int, offset: int, data: bytes) -> None:
    """pwrite `data` at `offset`, punching holes for all-zero 64 KiB-aligned pieces."""
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        # pieces end on BLOCK boundaries of the disk so zero blocks can become holes
        end = min(len(data), (offset + pos) // BLOCK * BLOCK + BLOCK - offset)
        piece = view[pos:end]
        if piece.nbytes == BLOCK and not any(piece.cast("Q")):
            _punch(fd, offset + pos, BLOCK)
        else:
            os.pwrite(fd, piece, offset + pos)
        pos = end


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy src to dst, holes kept as holes."""
    with open(src, "rb") as inp, open(dst, "wb") as out:
        size = os.fstat(inp.fileno()).st_size
        out.truncate(size)
        off = 0
        while off < size:
            try:
                data = os.lseek(inp.fileno(), off, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                return
            hole = os.lseek(inp.fileno(), data, os.SEEK_HOLE)
            pos = data
            while pos < hole:
                n = os.copy_file_range(inp.fileno(), out.fileno(), hole - pos, pos, pos)
                if n == 0:
                    break
                pos += n
            off = hole


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if out and start <= out[-1][0] + out[-1][1]:
            s, n = out[-1]
            out[-1] = (s, max(n, start + length - s))
        else:
            out.append((start, length))
    return out


def make_next_day(src: Path, dst: Path, seed: int = 43, *, rewrite_frac: float = 0.03,
                  insert_frac: float = 0.01, region_factor: int = 4) -> list[tuple[int, int]]:
    """Write the next day's version of disk `src` to `dst`; return the changed byte
    ranges (offset, length), merged and sorted, so a guest can replay only those.

    - ≈`rewrite_frac` of the 64 KiB blocks, chosen at random, rewritten with new
      text-like or random data;
    - one insertion of ≈`insert_frac` of the disk, as a file growing in the middle: a
      region of `region_factor` × the insertion gets new bytes at an unaligned point in
      its middle; the region's bytes after that point shift right by the insertion, and
      what is pushed past the region's end is truncated. The disk keeps its size.
    """
    rng = random.Random(seed)
    size = src.stat().st_size
    copy_sparse(src, dst)
    changed: list[tuple[int, int]] = []
    ins = max(4096, int(size * insert_frac) // 4096 * 4096)
    region = region_factor * ins
    r0 = rng.randrange(0, max(1, size - region)) // 4096 * 4096
    point = r0 + region // 2 + rng.randrange(1, 4096)  # unaligned: a shift, not a swap
    r1 = min(size, r0 + region)
    with open(src, "rb") as inp, open(dst, "r+b") as out:
        ifd, ofd = inp.fileno(), out.fileno()
        pos = point
        while pos < min(point + ins, r1):  # the inserted bytes
            n = min(_PIECE, point + ins - pos, r1 - pos)
            write_sparse(ofd, pos, _fill(rng, n))
            pos += n
        while pos < r1:  # the shifted tail of the region: dst[pos] = src[pos - ins]
            n = min(_PIECE, r1 - pos)
            write_sparse(ofd, pos, os.pread(ifd, n, pos - ins))
            pos += n
        changed.append((point, r1 - point))
        nblocks = size // BLOCK
        for b in sorted(rng.sample(range(nblocks), round(nblocks * rewrite_frac))):
            os.pwrite(ofd, _fill(rng, BLOCK), b * BLOCK)
            changed.append((b * BLOCK, BLOCK))
    return _merge(changed)

"""The bytes of a simulated vdisk: one sparse file plus an optional backing disk.

Why a backing disk: an EVA snapshot or a snapclone in its first instant holds no data of
its own; it reads through to its source for every block it has not yet saved. The disk
keeps a per-block `own` set: blocks in it live in this disk's file, others are read from
`backing` (the source, as it is now). Copy-on-write (done by the array model, which
knows the pairs) saves a source block into the replica's own file before the source
overwrites it. A disk without backing owns every block; holes read as zeros.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 1 << 20  # copy-on-write granularity (bytes)


class Disk:
    """A sparse file of `size` bytes, optionally reading through to `backing`."""

    def __init__(self, path: Path, size: int, backing: Disk | None = None,
                 own: set[int] | None = None) -> None:
        self.path = path
        self.size = size
        self.backing = backing
        self.own: set[int] = set(own or ())
        fresh = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fresh or os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)

    @property
    def nblocks(self) -> int:
        return (self.size + BLOCK - 1) // BLOCK

    def block_len(self, b: int) -> int:
        return min(BLOCK, self.size - b * BLOCK)

    def owns(self, b: int) -> bool:
        return self.backing is None or b in self.own

    def read_block(self, b: int) -> bytes:
        """The current content of block `b`, through the backing chain."""
        if not self.owns(b):
            assert self.backing is not None
            return self.backing.read_block(b)
        n = self.block_len(b)
        data = os.pread(self._fd, n, b * BLOCK)
        return data if len(data) == n else data + bytes(n - len(data))

    def put_block(self, b: int, data: bytes) -> None:
        """Store a whole block in this disk's own file (no pair logic here)."""
        assert len(data) == self.block_len(b), (len(data), b)
        if not any(data) and not self._file_has_data(b):
            pass  # keep holes as holes: a zero block over a hole changes nothing
        else:
            os.pwrite(self._fd, data, b * BLOCK)
        if self.backing is not None:
            self.own.add(b)

    def _file_has_data(self, b: int) -> bool:
        try:
            return os.lseek(self._fd, b * BLOCK, os.SEEK_DATA) < (b + 1) * BLOCK
        except OSError:  # ENXIO: no data after offset
            return False

    def allocated_blocks(self) -> set[int]:
        """Blocks that may hold non-zero data (sparse-aware: holes are skipped)."""
        if self.backing is not None:
            return set(self.own) | self.backing.allocated_blocks()
        found: set[int] = set()
        off = 0
        while off < self.size:
            try:
                start = os.lseek(self._fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            found.update(range(start // BLOCK, (end + BLOCK - 1) // BLOCK))
            off = end
        return found

    def detach(self) -> None:
        """Become independent: every block must already be own (caller copied them)."""
        self.backing = None
        self.own = set()

    def allocated_bytes(self) -> int:
        """Bytes really held in this disk's file (what a space-efficient replica costs)."""
        return os.fstat(self._fd).st_blocks * 512

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

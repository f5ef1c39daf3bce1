"""A version's disks restored to local image files (raw, sparse).

A store operation, like `restic restore`: no hypervisor and no flow, so the command
pays no Prefect or pyVmomi start-up. Chunks are read, decrypted, decompressed and
verified on `workers` threads while the main thread writes (pipeline.restore_blocks);
zero chunks are left as holes, so a thin disk restores as a thin file, and only the
data is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from dpflow.errors import UserError
from dpflow.store.durable import atomic_file
from dpflow.store.manifest import DiskManifest
from dpflow.store.pipeline import Progress, restore_blocks
from dpflow.store.protocol import ChunkStoreProtocol


def image_name(vm: str, index: int) -> str:
    return f"{vm}-disk{index}.img"


def restore_disk_file(store: ChunkStoreProtocol, disk: DiskManifest, out: Path, *,
                      workers: int, progress: Progress | None = None) -> int:
    """Write one disk of a version to `out` (created or replaced); returns the bytes of
    data written (holes excluded). The file appears under its name only when whole."""
    tmp = out.with_name(f".{out.name}.dpflow-tmp")
    tmp.unlink(missing_ok=True)  # left by a killed restore of the same file
    written = 0
    with atomic_file(out, tmp) as fd:
        os.ftruncate(fd, disk.capacity_bytes)
        offset = 0
        for cid, data in zip(disk.chunks, restore_blocks(store, disk, workers=workers,
                                                         progress=progress), strict=True):
            if cid is not None:  # a zero chunk stays a hole
                view = memoryview(data)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], offset + done)
                written += len(view)
            offset += len(data)
    return written


def check_target_dir(directory: Path, names: list[str], force: bool) -> None:
    """Bad input before anything is written: the directory must exist and, without
    force, hold none of the files."""
    if not directory.is_dir():
        raise UserError(f"--to-dir {directory}: not a directory; create it first")
    clash = [n for n in names if (directory / n).exists()]
    if clash and not force:
        raise UserError(f"--to-dir {directory}: {clash[0]} exists; pass --force to replace it")

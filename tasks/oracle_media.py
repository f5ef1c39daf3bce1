"""Replica to media and back: the datafile LUNs as images in the store ("ZDB to disk+tape").

The backup host reads the replica's LUNs (presented to it read-only by the flow, and
unpresented on every exit path) through its SAN path into the store, only the extents
the thin LUNs hold; the image manifest is durable before the ZDB session is committed.
A restore from media writes each image back to its source LUN (presented to the backup
host read-write for the write, unpresented after): stored chunks, and zeros only where
the LUN now holds data, so a sparse LUN stays sparse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dpflow.environment import Environment
from dpflow.store.manifest import DiskManifest, VersionManifest, read_manifest, write_manifest
from dpflow.store.pipeline import backup_disk, chunks_touching
from drivers.protocols import Presentation
from drivers.san import open_lun
from tasks.common import step

WRITE_SPAN = 4 << 20


@step(name="replica to media", retries=1)
def replica_to_media(env: Environment, array: str, db: str, presented: list[Presentation],
                     replicas: list[dict[str, str]], store: str | None, media_id: str
                     ) -> dict[str, Any]:
    """Every replica LUN presented to the backup host, read into the store; one manifest."""
    a, s = env.dc.array(array), env.dc.store(store)
    password = a.password.resolve()
    st = env.store(store, create=True)
    vdisks = {v.name: v for v in env.array(array).list_vdisks()}
    disks, read, added = [], 0, 0
    for i, p in enumerate(presented):
        source = next(r["source"] for r in replicas if r["target"] == p.vdisk)
        info = vdisks[p.vdisk]
        lun = open_lun(a, password, a.backup_host, p.lun, info.wwn, info.size_bytes)
        try:
            only = chunks_touching(lun.allocated(), s.chunk_size, info.size_bytes)
            chunks, stats = backup_disk(lun, st, chunk_size=s.chunk_size,
                                        workers=env.dc.proxies[0].read_streams, only=only)
        finally:
            lun.close()
        read, added = read + stats.bytes_read, added + stats.bytes_added
        disks.append(DiskManifest(key=i, label=source, capacity_bytes=info.size_bytes,
                                  chunk_size=s.chunk_size, chunks=chunks, transport="san"))
    write_manifest(st, VersionManifest(
        version_id=media_id, object_name=f"oracle:{db.upper()}", created=datetime.now(UTC),
        quiesced=True, vm={"database": db.upper(), "luns": [d.label for d in disks]},
        disks=disks))
    return {"version_id": media_id, "bytes_read": read, "bytes_added": added}


@step(name="write LUN from media", retries=1)
def write_lun_from_media(env: Environment, array: str, vdisk: str, store: str | None,
                         media_id: str) -> int:
    """The image of `vdisk` back onto it, through the backup host; bytes written."""
    a = env.dc.array(array)
    drv = env.array(array)
    st = env.store(store)
    disk = next(d for d in read_manifest(st, media_id).disks if d.label == vdisk)
    info = drv.get_vdisk(vdisk)
    p = drv.present(vdisk, a.backup_host, read_only=False)
    written = 0
    try:
        lun = open_lun(a, a.password.resolve(), a.backup_host, p.lun, info.wwn,
                       info.size_bytes, writable=True)
        try:
            cs, size = disk.chunk_size, disk.capacity_bytes
            holds = set(chunks_touching(lun.allocated(), cs, size))
            buf, at = bytearray(), -1
            for index, cid in enumerate(disk.chunks):
                if cid is None and index not in holds:
                    continue  # a hole over a hole
                if buf and (at + len(buf) != index * cs or len(buf) >= WRITE_SPAN):
                    lun.write(at, bytes(buf))
                    written += len(buf)
                    buf = bytearray()
                if not buf:
                    at = index * cs
                buf += st.get(cid) if cid else bytes(min(cs, size - index * cs))
            if buf:
                lun.write(at, bytes(buf))
                written += len(buf)
        finally:
            lun.close()
    finally:
        drv.unpresent(vdisk, a.backup_host)  # compensation: never left on the backup host
    return written

"""Store layout: one fsynced file per chunk (store v1) vs pack files (store v2).

Same chunks (64 KiB, compressible and random), same machine, same run:

    uv run python bench/bench_layout.py [--chunks 8192]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import zstandard

from dpflow.store import ChunkStore
from dpflow.store.chunks import chunk_id
from dpflow.store.durable import fsync_dir, write_atomic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8192)
    args = ap.parse_args()
    text = b"2026-11-27 INFO request served user=42 latency_ms=3 cache=hit\n" * 1100
    chunks = [(os.urandom(32 * 1024) + text)[: 64 * 1024] for _ in range(args.chunks)]
    ids = [chunk_id(c) for c in chunks]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        (root / "v1" / "tmp").mkdir(parents=True)
        for i in range(256):
            (root / "v1" / "chunks" / f"{i:02x}").mkdir(parents=True)
        z = zstandard.ZstdCompressor(level=3)
        t0 = time.perf_counter()
        for cid, data in zip(ids, chunks, strict=True):
            write_atomic(root / "v1" / "chunks" / cid[:2] / cid, z.compress(data),
                         root / "v1" / "tmp", sync_dir=False)
        for d in (root / "v1" / "chunks").iterdir():
            fsync_dir(d)
        v1 = time.perf_counter() - t0
        store = ChunkStore(root / "v2").init()
        t0 = time.perf_counter()
        for cid, data in zip(ids, chunks, strict=True):
            store.put(cid, data)
        store.flush()
        v2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = sum(store.has(c) for c in ids)
        lookup = time.perf_counter() - t0
        assert hits == len(ids)
    mb = len(chunks) * 64 * 1024 / 1e6
    print(f"{len(chunks)} chunks of 64 KiB ({mb:.0f} MB), one thread, fsync on:")
    for name, t in (("v1 one file per chunk", v1), ("v2 packs + SQLite", v2)):
        print(f"  {name:22} {t:6.2f} s  {mb / t:7.0f} MB/s  {len(chunks) / t:8.0f} chunks/s")
    print(f"  v2 index lookups:      {lookup:6.2f} s  {len(ids) / lookup:8.0f} lookups/s")
    print(f"  packs are {v1 / v2:.1f}x faster to write")


if __name__ == "__main__":
    main()

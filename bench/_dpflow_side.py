"""dpflow's side of the image benchmark, one operation per process so its peak RSS is
its own. Prints one JSON object on stdout.

    python bench/_dpflow_side.py backup       CONFIG VM
    python bench/_dpflow_side.py restore-vm   CONFIG VM VERSION AS_NAME
    python bench/_dpflow_side.py restore-file CONFIG VERSION OUT [--workers 2] [--sparse]
    python bench/_dpflow_side.py stats        CONFIG
    python bench/_dpflow_side.py last         CONFIG VM

The parent (bench_image.py) has started the Prefect server and vcsim and exported
PREFECT_API_URL, DPFLOW_HOME and the config's secrets. `seconds` is the operation as
timed inside the process (flow call or store restore); the parent also times the whole
process. Set DPFLOW_BENCH_PROFILE=FILE to write a cProfile of the operation.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def backup(config: str, vm: str) -> dict:
    from flows.vm_image import backup_vm_image

    t0 = time.perf_counter()
    r = backup_vm_image(config, vm)
    return {"seconds": time.perf_counter() - t0, "version_id": r.version_id,
            "bytes_read": r.bytes_read, "bytes_added": r.bytes_added, "status": r.status,
            "flow_seconds": r.seconds}


def restore_vm(config: str, vm: str, version: str, as_name: str) -> dict:
    from flows.vm_image import restore_vm_image

    t0 = time.perf_counter()
    r = restore_vm_image(config, vm, version, as_name=as_name)
    return {"seconds": time.perf_counter() - t0, "bytes_written": r.bytes_written,
            "verified": r.verified}


def restore_file(config: str, version: str, out: str, workers: int, sparse: bool) -> dict:
    """The store API to a local file, no fsync. Every byte is written, zeros too (restic
    0.14 has no sparse restore, so these are its terms); `sparse` leaves zero chunks as
    holes (the 32 GiB sparse run)."""
    from dpflow.environment import environment
    from dpflow.store.manifest import read_manifest
    from dpflow.store.pipeline import restore_blocks

    t0 = time.perf_counter()
    env = environment(config)
    row = env.catalog().version(version)
    store = env.store(row.store)
    disk = read_manifest(store, version).disks[0]
    written = 0
    with open(out, "wb") as f:
        f.truncate(disk.capacity_bytes)
        fd = f.fileno()
        offset = 0
        for cid, data in zip(disk.chunks, restore_blocks(store, disk, workers=workers),
                             strict=True):
            if cid is not None or not sparse:
                os.pwrite(fd, data, offset)
                written += len(data)
            offset += len(data)
    return {"seconds": time.perf_counter() - t0, "bytes_written": written,
            "capacity_bytes": disk.capacity_bytes}


def last(config: str, vm: str) -> dict:
    """The latest version of `vm`: what the backup read and added, and its note."""
    from dpflow.environment import environment

    v = environment(config).catalog().versions(vm)[-1]
    return {"version_id": v.id, "bytes_read": v.bytes_read, "bytes_added": v.bytes_added,
            "note": v.note}


def stats(config: str) -> dict:
    from dpflow.environment import environment

    env = environment(config)
    store = env.store()
    packs = sum(1 for _ in store.packs_dir.rglob("*") if _.is_file())
    return {"chunks": store.index.count(), "packs": packs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["backup", "restore-vm", "restore-file", "stats", "last"])
    ap.add_argument("args", nargs="+")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sparse", action="store_true")
    a = ap.parse_args()
    from dpflow.prefect_server import quiet_console

    quiet_console()
    run = {
        "backup": lambda: backup(*a.args),
        "restore-vm": lambda: restore_vm(*a.args),
        "restore-file": lambda: restore_file(*a.args, a.workers, a.sparse),
        "stats": lambda: stats(*a.args),
        "last": lambda: last(*a.args),
    }[a.op]
    import dpflow.store.pipeline  # noqa: F401 - so rss_kib_after_imports counts the code
    import flows.vm_image  # noqa: F401

    prof_file = os.environ.get("DPFLOW_BENCH_PROFILE")
    rss_before = _rss_kib()
    if prof_file:
        prof = cProfile.Profile()
        out = prof.runcall(run)
        prof.dump_stats(prof_file)
    else:
        out = run()
    out["rss_kib_after_imports"] = rss_before
    out["maxrss_kib"] = _rss_kib()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

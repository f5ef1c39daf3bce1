"""Instant VM Recovery: time to a running VM against the size of its version, next to a
full restore of the same version.

For each size: a VM whose one thin disk holds an ext4 guest file system (64 MiB) at its
start and zeros after it is backed up (not timed); then the real flows on a local
Prefect server and vcsim: `instant_recover_vm` (published over FUSE, NFS datastore,
VM registered and powered on) timed to power-on and to the guest's heartbeat and first
file read (guest operations), then aborted; and `restore_vm_image --as` (every byte
written by the direct transport and read back against the manifest) timed to its end.

    uv run python bench/bench_instant.py [--sizes-gib 1 16] [--json bench/results/instant.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB, MiB = 1 << 30, 1 << 20


def config(work: Path, sim: Any) -> str:
    from dpflow_cli.demo import write_config

    path = write_config(work, sim)
    cfg = yaml.safe_load(path.read_text())
    cfg["proxies"] = [{"transports": ["direct", "network"],
                       "datastores": {k: str(v) for k, v in sim.datastores.items()}}]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def one_size(cfg: str, sim: Any, work: Path, gib: int) -> dict[str, Any]:
    from dpflow.environment import environment
    from drivers.vsphere_guest import GuestFiles
    from drivers.vsphere_lab import IsolatedLab
    from flows.instant import abort_instant_recovery, instant_recover_vm
    from flows.vm_image import backup_vm_image, restore_vm_image
    from simulators.guest_disks import make_ext4

    vm = f"ivr-{gib}g"
    sim.create_vm(vm, [gib * GiB])
    img = work / f"{vm}.img"
    make_ext4(img, 64 * MiB, {"etc/hostname": f"{vm}\n".encode(),
                              "srv/data.bin": os.urandom(16 * MiB)})
    os.truncate(img, gib * GiB)
    sim.seed_disk(vm, 0, img)
    img.unlink()
    t0 = time.perf_counter()
    b = backup_vm_image(cfg, vm)
    out: dict[str, Any] = {"size_gib": gib, "backup_s": round(time.perf_counter() - t0, 2),
                           "load_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    r = instant_recover_vm(cfg, vm, b.version_id, f"{vm}-ivr")
    out["instant_power_on_s"] = round(time.perf_counter() - t0, 2)
    hv = environment(cfg).hypervisor("vcsim")
    info = hv.find_vm(r.name)
    while IsolatedLab(hv).heartbeat(info)[0] != "green":
        time.sleep(0.05)
    out["instant_heartbeat_s"] = round(time.perf_counter() - t0, 2)
    assert GuestFiles(hv, info, "root", sim.guest_password).exists("/etc/hostname")
    out["instant_guest_file_s"] = round(time.perf_counter() - t0, 2)
    abort_instant_recovery(cfg, r.name)
    t0 = time.perf_counter()
    restore_vm_image(cfg, vm, b.version_id, as_name=f"{vm}-full")
    out["full_restore_s"] = round(time.perf_counter() - t0, 2)
    out["load_after"] = os.getloadavg()[0]
    hv.destroy_vm(hv.find_vm(f"{vm}-full"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from dpflow import prefect_server
    from simulators.vcsim import Vcsim

    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "cpus": os.cpu_count(), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="dpflow-bench-ivr-") as tmp:
        work = Path(tmp)
        os.environ["DPFLOW_HOME"] = str(work / "home")
        prefect_server.quiet_console()
        os.environ["PREFECT_API_URL"] = prefect_server.ensure_server()
        try:
            with Vcsim(work_dir=work / "vcsim") as sim:
                cfg = config(work, sim)
                for gib in args.sizes_gib:
                    res["sizes"].append(one_size(cfg, sim, work, gib))
                    print(json.dumps(res["sizes"][-1]), flush=True)
        finally:
            prefect_server.stop_server()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

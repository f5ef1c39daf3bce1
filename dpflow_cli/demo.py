"""The demo data centre: a simulated vCenter with real disk bytes, backed up and restored.

The story an administrator should see: two VMs backed up from point-in-time snapshots
while a guest keeps writing to one of them; a VM restored under a new name and proven
bit for bit equal to the moment of its snapshot; no snapshot left behind.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from dpflow import prefect_server
from simulators.guest_disks import MiB, make_guest_disk

PASSWORD_ENV = "DPFLOW_DEMO_VC_PASSWORD"
KEY_ENV = "DPFLOW_DEMO_STORE_KEY"


def file_digest(path: Path, size: int | None = None) -> str:
    h = hashlib.blake2b(digest_size=16)
    left = size if size is not None else path.stat().st_size
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(left, 8 * MiB))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def write_config(workdir: Path, sim: Any) -> Path:
    """The data-centre file an administrator would write, pointing at the simulator."""
    cfg = {
        "vcenters": [{"name": "vcsim", "host": sim.host, "port": sim.port,
                      "user": sim.username, "password": {"env": PASSWORD_ENV},
                      "ca_file": str(sim.ca_file)}],
        "stores": [{"name": "library", "path": "store", "key": {"env": KEY_ENV}}],
        "catalog_url": "sqlite:///catalog.db",
    }
    path = workdir / "dpflow.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.environ[PASSWORD_ENV] = sim.password
    key_file = workdir / "store.key"  # the demo's own key; in production a Secret block
    if not key_file.exists():
        key_file.write_text(os.urandom(32).hex())
        key_file.chmod(0o600)
    os.environ.setdefault(KEY_ENV, key_file.read_text().strip())
    return path


class GuestWriter(threading.Thread):
    """A guest that keeps writing to its disk once the backup's snapshot exists."""

    def __init__(self, sim: Any, vm: str, disk_size: int) -> None:
        super().__init__(daemon=True)
        self.sim, self.vm, self.size = sim, vm, disk_size
        self.stop = threading.Event()
        self.writes = 0
        self.wrote_during_snapshot = False

    def run(self) -> None:
        rnd = os.urandom(MiB)
        while not self.stop.is_set():
            if self.sim.snapshot_count(self.vm) > 0:
                offset = (self.writes * 7 * MiB) % (self.size - MiB)
                self.sim.guest_write(self.vm, 0, offset, rnd)
                self.writes += 1
                self.wrote_during_snapshot = True
            time.sleep(0.01)


def run_demo(workdir: Path, disk_mib: int, console: Console) -> None:
    from simulators.vcsim import Vcsim

    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("store", "catalog.db", "catalog.db-wal", "catalog.db-shm"):
        p = workdir / stale
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    console.rule("[bold]dpflow demo data centre")
    t_start = time.perf_counter()
    with Vcsim(work_dir=workdir / "vcsim") as sim:
        console.print(f"vCenter simulator: {sim.url} (TLS verified with {sim.ca_file.name})")
        size = disk_mib * MiB
        vms = {"web01": [size, size // 4], "db01": [size]}
        seeds: dict[tuple[str, int], str] = {}
        for n, (vm, sizes) in enumerate(vms.items()):
            sim.create_vm(vm, sizes)
            for i, s in enumerate(sizes):
                img = workdir / f"{vm}-disk{i}.img"
                make_guest_disk(img, s, seed=100 * n + i)
                sim.seed_disk(vm, i, img)
                seeds[(vm, i)] = file_digest(img)
                img.unlink()
        console.print(f"seeded {len(vms)} VMs with ext4 file systems, data and zeros: "
                      + ", ".join(f"{vm} ({len(s)} disk{'s' * (len(s) > 1)}, "
                                  f"{sum(s) // MiB} MiB)" for vm, s in vms.items()))
        config = write_config(workdir, sim)
        api = prefect_server.ensure_server()
        console.print(f"Prefect UI: [link]{prefect_server.ui_url(api)}[/link]")

        from flows.night import backup_vms
        from flows.vm_image import backup_vm_image, restore_vm_image

        writer = GuestWriter(sim, "db01", size)
        writer.start()
        console.rule("backup: web01 and db01 (db01's guest writes during its backup)")
        results = backup_vms(str(config), list(vms))
        writer.stop.set()
        writer.join()
        for r in results:
            console.print(f"  {r.vm}: {r.status}, version {r.version_id}, "
                          f"{r.bytes_read / 1e6:,.0f} MB read, {r.bytes_added / 1e6:,.1f} MB "
                          f"stored, {r.seconds:.1f}s, quiesced={r.quiesced}")
        left = {vm: sim.snapshot_count(vm) for vm in vms}
        console.print(f"  snapshots left on the VMs: {left}")
        live_changed = file_digest(sim.current_disk_path("db01", 0)) != seeds[("db01", 0)]
        console.print(f"  guest of db01 wrote {writer.writes} MiB during the backup; its live "
                      f"disk changed: {live_changed}")

        console.rule("restore: db01 as db01-restored, verified bit for bit")
        db = next(r for r in results if r.vm == "db01")
        rr = restore_vm_image(str(config), "db01", db.version_id, as_name="db01-restored")
        restored = file_digest(sim.current_disk_path("db01-restored", 0), size)
        point_in_time = restored == seeds[("db01", 0)]
        console.print(f"  {rr.bytes_written / 1e6:,.0f} MB written in {rr.seconds:.1f}s; "
                      f"equals db01 at its snapshot: {point_in_time}")
        rows = _image_rows(results, left, writer.writes, rr, point_in_time)

        console.rule("day 2: incremental backup of db01 with CBT (its guest wrote meanwhile)")
        day2 = sim.current_disk_path("db01", 0)
        inc = backup_vm_image(str(config), "db01")
        day2_digest = file_digest(day2, size)
        from dpflow.environment import environment

        inc_note = environment(config).catalog().version(str(inc.version_id)).note
        console.print(f"  {inc.status}: read {inc.bytes_read / 1e6:,.1f} MB of "
                      f"{size / 1e6:,.0f} MB, stored {inc.bytes_added / 1e6:,.1f} MB, "
                      f"{inc.seconds:.1f}s ({inc_note})")
        rr2 = restore_vm_image(str(config), "db01", inc.version_id, as_name="db01-day2")
        day2_ok = file_digest(sim.current_disk_path("db01-day2", 0), size) == day2_digest
        console.print(f"  day-2 version restored as db01-day2: equals db01 now: {day2_ok}")
        rows += [("incremental db01 (CBT)",
                  "incremental" if "incremental" in inc_note else "NOT incremental",
                  f"{inc.bytes_read / 1e6:,.1f} MB read of {size / 1e6:,.0f} MB"),
                 ("restore day 2 = live db01", "yes" if day2_ok else "NO", f"{rr2.seconds:.1f}s")]

        console.rule("media: verify every chunk of every version (encrypted store)")
        from flows.maintenance import verify_media

        vr = verify_media(str(config), read_percent=100)
        console.print(f"  {vr.versions} versions, {vr.chunks_checked:,} chunks read, "
                      f"decrypted and hashed: {'sound' if vr.ok else 'DAMAGED'}")
        rows.append(("verify store (100 % read)", "sound" if vr.ok else "DAMAGED",
                     f"{vr.chunks_checked:,} chunks, AES-256-GCM"))

        console.rule("restore test with a signed proof; Instant VM Recovery")
        from dpflow_cli.demo_proofs import run_proofs_demo

        rows += run_proofs_demo(sim, config, workdir, console, str(db.version_id))

        console.rule("file level: NTFS and ext4 guests, incremental, one file from an image")
        from dpflow_cli.demo_files import run_files_demo

        rows += run_files_demo(sim, config, workdir, console)

    console.rule("array: EVA Business Copy replicas and Instant Recovery over SMI-S")
    from dpflow_cli.demo_array import run_array_demo

    rows += run_array_demo(workdir / "array", console)

    console.rule("oracle: Zero Downtime Backup and Instant Recovery of a database")
    from dpflow_cli.demo_oracle import run_oracle_demo

    rows += run_oracle_demo(workdir / "oracle", console)

    console.rule("disaster tolerance: site A lost mid-workload, its LUNs up at site B (CA)")
    from dpflow_cli.demo_dr import run_dr_demo

    rows += run_dr_demo(workdir / "dr", console)

    ok = all(not any(bad in r[1] for bad in ("FAILED", "NO", "NOT", "DAMAGED", "failed"))
             for r in rows)
    rows.append(("demo", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t_start:.0f}s end to end"))
    table, markdown = _report(rows)
    console.rule("report")
    console.print(table)
    from flows.reports import publish_report

    publish_report(markdown, "dpflow-demo-report",
                   "dpflow demo data centre: backup, restore, verify")
    console.print(f"report also saved as Prefect artifact 'dpflow-demo-report' "
                  f"({prefect_server.ui_url(api)}/artifacts)")
    if not ok:
        from dpflow.errors import DpflowError

        raise DpflowError("the demo did not verify: see the report above")
    console.print("[bold green]demo passed[/]: every check above held")


def _image_rows(results: list[Any], left: dict[str, int], writes: int, rr: Any,
                point_in_time: bool) -> list[tuple[str, str, str]]:
    rows = [(f"backup {r.vm}", r.status,
             f"{r.bytes_read / 1e6:,.0f} MB read, {r.bytes_added / 1e6:,.1f} MB stored, "
             f"{r.seconds:.1f}s") for r in results]
    return rows + [
        ("snapshots removed", "yes" if not any(left.values()) else "NO", str(left)),
        ("guest wrote during backup", "yes" if writes else "NO", f"{writes} MiB"),
        (f"restore db01 → {rr.target}", "verified" if rr.verified else "NOT verified",
         f"{rr.bytes_written / 1e6:,.0f} MB in {rr.seconds:.1f}s"),
        ("restored = db01 at snapshot time", "yes" if point_in_time else "NO", "bit for bit"),
    ]


def _report(rows: list[tuple[str, str, str]]) -> tuple[Table, str]:
    table = Table("step", "result", "detail")
    for r in rows:
        table.add_row(*r)
    md = "| step | result | detail |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows)
    return table, "# dpflow demo report\n\n" + md

"""The disaster-tolerance part of the demo: site A is lost mid-workload, B takes over.

The story: two simulated EVAs (site A, site B, each its own process) replicate the LUN
group `app` (data + logs) as one asynchronous DR group over an HTTPS link that carries
less than the host writes. A host at A writes dependent writes (each log record after
its data block). Then site A is lost: the link is cut and the host stops. dpflow fails
the group over to B (unplanned) and reports the writes lost. B's LUNs are compared
bit-for-bit with A's initial bytes plus the writes that crossed the link, rebuilt from
the writer's journal: a prefix of the writes, the same for both LUNs, nothing after it.
Then B writes, A comes back (it learns it lost and is resynchronised from B) and after
the 15-minute guard (the arrays' clocks moved on) the group fails back home.
Two VMs ride along: their files live in a VMFS volume on a third vdisk of the same DR
group, so they reach B only through the link. At B the failover flow mounts the volume
by resignature, registers them from their .vmx, moves their NIC to B's network and starts
them by priority (db01, then web01), each checked by its guest heartbeat and a file read
through guest operations; their disks at B are compared bit for bit with what A's host
had written to the LUN. The failback brings them up at A again, with what they wrote at B.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dpflow_cli.demo_array import DependentWriter, initial_bytes, read_lun, write_lun

MiB = 1 << 20
VMS = (("db01", 1), ("web01", 2))


def _vms_at_a(s: Any, a: Any) -> dict[str, bytes]:
    """A VMFS datastore on vdisk `vmfs` at A with the demo's VMs (each booting from an
    ext4 file system, with data after it); the host writes it to the LUN. Their bytes."""
    import os

    from simulators import site_vms as w

    a.create_vdisk("vmfs", 64 * MiB, "DG1")
    lun = a.present("vmfs", "esx-a").lun
    vca = s.vcenters["A"]
    ds = w.format_datastore(vca, "DS-app", w.lun_id(s.a, "esx-a", lun))
    sent = {}
    for vm, _ in VMS:
        w.create_vm(vca, vm, ds, 6 * MiB, power_on=False)
        w.install_guest(vca, vm, {"app/health": b"ok\n"})
        w.guest_write(vca, vm, 4 * MiB, os.urandom(MiB))
        w.power_on(vca, vm)
        sent[vm] = w.disk_bytes(vca, vm)
    w.flush(vca, ds)
    return sent


def _vm_rows(res: Any, s: Any, site: str, sent: dict[str, bytes]) -> list[tuple[str, str, str]]:
    from simulators import site_vms as w

    up = {v.vm: v for v in res.vms if v.status == "up"}
    order = [v.vm for v in sorted(up.values(), key=lambda v: v.up_at_s or 0)]
    ok = set(up) == set(sent) and order[0] == "db01"
    nets = sorted({n for v in up.values() for n in v.networks})
    same = all(w.disk_bytes(s.vcenters[site], vm) == data for vm, data in sent.items()
               if s.vcenters[site].vm_exists(vm))
    return [(f"VMs up at site {site}", "yes" if ok else "NO",
             f"{' then '.join(order) or 'none'} by priority; heartbeat and /app/health "
             f"probe ok; network {', '.join(nets)}"),
            (f"VM disks at {site} bit for bit", "yes" if same and ok else "NO",
             f"{len(sent)} disks = what the other site's host had written to the LUN")]


def _wait(cond: Any, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def run_dr_demo(workdir: Path, console: Any, lun_mib: int = 16) -> list[tuple[str, str, str]]:
    """Run the site-loss story in `workdir` (made fresh); returns the report rows."""
    from dpflow import prefect_server
    from drivers.smis import SmisArray
    from flows import site_failover as sf
    from flows.dr_admin import protect
    from simulators.sites import TwoSites

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    rows: list[tuple[str, str, str]] = []
    size, t_start = lun_mib * MiB, time.perf_counter()
    prefect_server.ensure_server()
    with TwoSites.start(workdir / "sites", vcenters=True) as s:
        console.print(f"site A: {s.a.url}, site B: {s.b.url} (EVA simulators, CA-verified "
                      "HTTPS for SMI-S and for the inter-site link)")
        a = SmisArray(s.a.connection())
        luns = []
        for v in ("data", "logs"):
            a.create_vdisk(v, size, "DG1")
            luns.append(a.present(v, "esx-a").lun)
        host_a = s.host("A")
        init = [initial_bytes(size, 11), initial_bytes(size, 12)]
        for lun, data in zip(luns, init, strict=True):
            write_lun(host_a, lun, data)
        sent = _vms_at_a(s, a)
        cfg = str(s.write_config(workdir / "dpflow-dr.yaml", [
            {"name": "app", "home": "A", "remote": "B", "vdisks": ["data", "logs", "vmfs"],
             "mode": "async", "datastore": "DS-app",
             "vms": [{"name": vm, "priority": p, "probes": ["guest-file:/app/health"]}
                     for vm, p in VMS]}]))
        protect(cfg)
        synced = _wait(lambda: s.dr_info("A", "app")["state"] == "normal"
                       and s.dr_info("A", "app")["pending_blocks"] == 0)
        rows.append(("DR group app (async) A → B", "created" if synced else "FAILED",
                     f"data + logs, {lun_mib} MiB each, + VMFS vdisk with "
                     f"{', '.join(sent)}; initial copy over the link"))

        s.link(bandwidth=256 * 1024)  # the link carries less than the host writes
        writer = DependentWriter(host_a, luns[0], luns[1], size, pause_s=0.01)
        writer.start()
        _wait(lambda: writer.n >= 60 or not writer.is_alive(), 60)
        s.link(up=False)  # site A lost: no more writes cross ...
        writer.stop.set()  # ... and its host is gone
        writer.join()
        if writer.error:
            raise writer.error
        logged = s.dr_info("A", "app")
        console.print(f"site A lost after {writer.n} dependent writes; A's log held "
                      f"{logged['log_writes']} writes ({logged['log_bytes'] / MiB:.1f} MiB) "
                      "not yet at B")
        res = sf.failover_site(cfg, "B", planned=False)
        g = res.groups[0]
        rows.append(("unplanned failover to B", "completed" if res.ok else "FAILED",
                     f"{res.seconds:.1f}s; B holds {g.writes_held} host writes, lost "
                     f"{g.writes_lost} (the unsent tail of A's log)"))
        b = SmisArray(s.b.connection())
        host_b = s.host("B")
        got = [read_lun(host_b, p.lun, size) for v in ("data", "logs")
               for p in b.list_presentations(v) if p.host == "esx-b"]
        na = DependentWriter.point_in_time(init[0], got[0], log=False)
        nb = DependentWriter.point_in_time(init[1], got[1], log=True)
        exact = (got[0] == DependentWriter.expected(init[0], na, False)
                 and got[1] == DependentWriter.expected(init[1], nb, True))
        rows.append(("B = what A had sent, bit for bit", "yes" if exact else "NO",
                     f"data holds writes 1..{na}, logs 1..{nb} of {writer.n}; rebuilt from "
                     "the writer's journal"))
        rows.append(("one moment for both LUNs", "yes" if na - nb in (0, 1) else "NO",
                     "every log record's data block is there"))
        rows += _vm_rows(res, s, "B", sent)

        lun_b = next(p.lun for p in b.list_presentations("data") if p.host == "esx-b")
        host_b.write(lun_b, 0, b"written at site B")
        from simulators import site_vms as w

        w.guest_write(s.vcenters["B"], "db01", 5 * MiB, b"db01 wrote this at site B")
        sent = {vm: w.disk_bytes(s.vcenters["B"], vm) for vm, _ in VMS}
        s.link(up=True, bandwidth=None)  # site A returns
        back_ok = _wait(lambda: s.dr_info("A", "app")["role"] == "destination"
                        and s.dr_info("B", "app")["state"] == "normal")
        rows.append(("site A returns", "yes" if back_ok else "NO",
                     "A learns it lost the failover and is resynchronised from B"))
        early = sf.failback_site(cfg, "A")
        rows.append(("failback refused for 15 min", "yes" if not early.ok else "NO",
                     early.groups[0].message[:90]))
        s.advance_clock(15 * 60)
        fb = sf.failback_site(cfg, "A")
        lun_a = next(p.lun for p in a.list_presentations("data") if p.host == "esx-a")
        home = host_a.read(lun_a, 0, 17) == b"written at site B"
        rows.append(("failback to A", "completed" if fb.ok and home else "FAILED",
                     f"{fb.seconds:.1f}s; A's data has B's writes"))
        rows += _vm_rows(fb, s, "A", sent)
        a.close()
        b.close()
    ok = all(r[1] in ("created", "completed", "yes") for r in rows)
    rows.append(("site-loss demo", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t_start:.0f}s end to end"))
    return rows

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
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dpflow_cli.demo_array import DependentWriter, initial_bytes, read_lun, write_lun

MiB = 1 << 20


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
    with TwoSites.start(workdir / "sites") as s:
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
        cfg = str(s.write_config(workdir / "dpflow-dr.yaml", [
            {"name": "app", "home": "A", "remote": "B", "vdisks": ["data", "logs"],
             "mode": "async"}]))
        protect(cfg)
        synced = _wait(lambda: s.dr_info("A", "app")["state"] == "normal"
                       and s.dr_info("A", "app")["pending_blocks"] == 0)
        rows.append(("DR group app (async) A → B", "created" if synced else "FAILED",
                     f"data + logs, {lun_mib} MiB each, initial copy over the link"))

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

        lun_b = next(p.lun for p in b.list_presentations("data") if p.host == "esx-b")
        host_b.write(lun_b, 0, b"written at site B")
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
        a.close()
        b.close()
    ok = all(r[1] in ("created", "completed", "yes") for r in rows)
    rows.append(("site-loss demo", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t_start:.0f}s end to end"))
    return rows

"""Persist an array's metadata as JSON beside its sparse files.

Why atomic writes: the server process may be killed between two requests; the JSON is
written to a temporary file, fsynced and renamed, so the array restarts from the last
completed operation. Block data lives in the sparse files already.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from simulators.eva.disks import Disk
from simulators.eva.drgroup import DrGroup, load_log, save_logs
from simulators.eva.jobs import Job
from simulators.eva.objects import Pair, Pool, ReplicaSet, VDisk

if TYPE_CHECKING:
    from simulators.eva.model import EvaArray

VERSION = 1


def save_state(a: EvaArray, clean: bool = False) -> None:
    """`clean`: the process stops here; a state not saved clean means writes after it
    may be missing from the CA logs (they are then rebuilt by a full copy)."""
    state: dict[str, Any] = {
        "version": VERSION, "name": a.name, "seq": a.seq, "job_seconds": a.job_seconds,
        "job_mode": a.job_mode,
        "pools": [p.__dict__ for p in a.pools.values()],
        "vdisks": [{"name": v.name, "id": v.id, "size": v.size, "pool": v.pool,
                    "role": v.role, "own": sorted(v.disk.own),
                    "backing": _backing_name(a, v)} for v in a.vdisks.values()],
        "hosts": a.hosts,
        "presentations": [[v, h, lun, ro] for (v, h), (lun, ro) in a.presentations.items()],
        "groups": a.groups,
        "sets": [s.__dict__ for s in a.sets.values()],
        "pairs": [dict(p.__dict__, changed=sorted(p.changed)) for p in a.pairs.values()],
        "jobs": [j.to_json() for j in a.jobs.values()],
        "faults": a.faults.to_json(),
        "dr_groups": [g.to_json() for g in a.dr_groups.values()],
        "clean": clean,
    }
    save_logs(a.root, a.dr_groups)
    path = a.root / "state.json"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _backing_name(a: EvaArray, v: VDisk) -> str | None:
    if v.disk.backing is None:
        return None
    return next(o.name for o in a.vdisks.values() if o.disk is v.disk.backing)


def load_state(a: EvaArray) -> None:
    state = json.loads((a.root / "state.json").read_text())
    if state.get("version") != VERSION:
        raise ValueError(f"{a.root}: unsupported state version {state.get('version')}")
    a.name, a.seq, a.job_seconds = state["name"], state["seq"], state["job_seconds"]
    a.job_mode = state.get("job_mode", False)
    a.pools = {p["name"]: Pool(**p) for p in state["pools"]}
    rows = {r["name"]: r for r in state["vdisks"]}

    def build(name: str) -> VDisk:
        if name in a.vdisks:
            return a.vdisks[name]
        r = rows[name]
        backing = build(r["backing"]).disk if r["backing"] else None
        disk = Disk(a.root / "disks" / f"{r['id']}.img", r["size"], backing, set(r["own"]))
        vd = VDisk(r["name"], r["id"], r["size"], r["pool"], r["role"], disk)
        a.vdisks[name] = vd
        return vd

    for name in rows:
        build(name)
    a.hosts = state["hosts"]
    a.presentations = {(v, h): (lun, ro) for v, h, lun, ro in state["presentations"]}
    a.groups = state["groups"]
    a.sets = {s["name"]: ReplicaSet(**s) for s in state["sets"]}
    a.pairs = {p["id"]: Pair(**dict(p, changed=set(p["changed"]))) for p in state["pairs"]}
    a.jobs = {j["id"]: Job(**dict(j, affected=[tuple(x) for x in j["affected"]]))
              for j in state["jobs"]}
    a.faults.load_json(state.get("faults", {}))
    a.dr_groups = {}
    for d in state.get("dr_groups", []):
        g = DrGroup.from_json(d)
        g.log = load_log(a.root, g.name)
        if g.role == "source" and not state.get("clean", True):
            if g.mode == "enhanced":  # the journal has every logged write
                g.seq = max([g.seq] + [e.seq for e in g.log])
            else:
                a._overflow(g)  # writes after the last save are not in the log: copy all
        a.dr_groups[g.name] = g

"""A plain-Python EVA: disk groups (pools), vdisks, hosts, presentations, Business Copy.

Why plain Python under the CIM face: the CIM providers only translate; every rule a real
array enforces (space, names, in-use, state changes) lives here once, testable without
CIM. One re-entrant lock serialises every operation and every host write, so a replica
set created under it is one point in time for all its members even while a host keeps
writing. State is JSON (`state.json`) beside one sparse file per vdisk, so an array
survives its process.

Replica kinds and what they cost here (as on an EVA):
- snapshot: copy-on-write, reserves the source's size in the pool; creation metadata-only.
- vsnap: copy-on-write, space-efficient (pays per saved block); breaks if the pool fills.
- snapclone: point in time at creation (copy-on-write first), then a full independent copy
  of the source's allocated blocks (holes stay holes).
- mirrorclone: full copy kept synchronised (host writes go to both) until fractured.
Restore copies only the blocks changed on either side since the point in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from simulators.eva.disks import BLOCK, Disk
from simulators.eva.drgroup import DrGroup
from simulators.eva.jobs import Clock, Faults, Job, WallClock
from simulators.eva.link import Link
from simulators.eva.objects import (
    FAILED,
    IN_USE,
    INVALID,
    Missing,
    Pair,
    Pool,
    Refusal,
    ReplicaSet,
    VDisk,
)
from simulators.eva.remote import ContinuousAccess
from simulators.eva.remote_ops import DrOperations
from simulators.eva.replication import BusinessCopy
from simulators.eva.store import load_state, save_state


class EvaArray(BusinessCopy, ContinuousAccess, DrOperations):
    """One simulated array rooted at a directory (see module docstring)."""

    def __init__(self, root: Path | str, clock: Clock | None = None,
                 faults: Faults | None = None, name: str = "EVA1") -> None:
        self.root = Path(root)
        (self.root / "disks").mkdir(parents=True, exist_ok=True)
        self.name = name
        self.clock = clock or WallClock()
        self.faults = faults or Faults()
        self.lock = threading.RLock()
        self.pools: dict[str, Pool] = {}
        self.vdisks: dict[str, VDisk] = {}
        self.hosts: dict[str, list[str]] = {}
        self.presentations: dict[tuple[str, str], tuple[int, bool]] = {}  # (vd,host)->(lun,ro)
        self.groups: dict[str, list[str]] = {}
        self.sets: dict[str, ReplicaSet] = {}
        self.pairs: dict[str, Pair] = {}
        self.jobs: dict[str, Job] = {}
        self.seq = 0
        self.job_seconds = 0.0  # how long a job reports Running
        self.job_mode = False  # answer 4096 + ConcreteJob instead of 0
        self.dr_groups: dict[str, DrGroup] = {}  # Continuous Access (remote.py)
        self.links: dict[str, Link] = {}  # peer array name -> inter-site link (not saved)
        if (self.root / "state.json").exists():
            load_state(self)

    # ---- admin and bookkeeping ---------------------------------------------------
    def add_pool(self, name: str, capacity: int) -> None:
        with self.lock:
            self.pools[name] = Pool(name, capacity)
            self.save()

    def add_host(self, name: str, wwns: list[str]) -> None:
        with self.lock:
            self.hosts[name] = [w.upper() for w in wwns]
            self.save()

    def fill_pool(self, pool: str, filled: bool = True) -> None:
        """Fault: take (or give back) all the free space of a pool."""
        with self.lock:
            p = self._pool(pool)
            p.filled = 0
            if filled:
                p.filled = self.pool_free(pool)
            self.save()

    def pool_free(self, pool: str) -> int:
        p = self._pool(pool)
        used = sum(v.reserved() for v in self.vdisks.values() if v.pool == pool)
        return max(0, p.capacity - used - p.filled)

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq:06d}"

    def save(self) -> None:
        with self.lock:
            save_state(self)

    def close(self) -> None:
        with self.lock:
            save_state(self, clean=True)
            for vd in self.vdisks.values():
                vd.disk.close()

    def _pool(self, name: str) -> Pool:
        if name not in self.pools:
            raise Missing(f"disk group '{name}' does not exist")
        return self.pools[name]

    def vdisk(self, name: str) -> VDisk:
        if name not in self.vdisks:
            raise Missing(f"virtual disk '{name}' does not exist")
        return self.vdisks[name]

    def _need_space(self, pool: str, nbytes: int, what: str) -> None:
        free = self.pool_free(pool)
        if nbytes > free:
            raise Refusal(FAILED, f"insufficient free space in disk group '{pool}' for "
                                  f"{what}: {nbytes} bytes requested, {free} available")

    # ---- vdisks ----------------------------------------------------------------------
    def create_vdisk(self, name: str, size: int, pool: str) -> VDisk:
        with self.lock:
            self._pool(pool)
            if size <= 0 or size % 512:
                raise Refusal(INVALID, f"size {size} is not a positive multiple of 512 bytes")
            self._free_name(name)
            self._need_space(pool, size, f"virtual disk '{name}'")
            vd = self._new_vdisk(name, size, pool, "vdisk", None)
            self.save()
            return vd

    def _free_name(self, name: str) -> None:
        if not name or name in self.vdisks:
            raise Refusal(INVALID, f"a virtual disk named '{name}' already exists"
                          if name else "a virtual disk needs a name")

    def _new_vdisk(self, name: str, size: int, pool: str, role: str,
                   backing: Disk | None) -> VDisk:
        vid = "6005-08B4-0010-" + self.next_id("")
        disk = Disk(self.root / "disks" / f"{vid}.img", size, backing)
        vd = VDisk(name, vid, size, pool, role, disk)
        self.vdisks[name] = vd
        return vd

    def delete_vdisk(self, name: str) -> None:
        with self.lock:
            vd = self.vdisk(name)
            self._not_presented(vd, "deleted")
            if vd.role != "vdisk":
                raise Refusal(IN_USE, f"virtual disk '{name}' is a {vd.role} of a replica set; "
                                      "delete the replica instead")
            if any(p.source == name for p in self.pairs.values()):
                raise Refusal(IN_USE, f"virtual disk '{name}' has replicas and cannot be deleted")
            if any(name in m for m in self.groups.values()):
                raise Refusal(IN_USE, f"virtual disk '{name}' is a member of a group")
            if (g := self.ca_group_of(name)) is not None:
                raise Refusal(IN_USE, f"virtual disk '{name}' is a member of DR group "
                                      f"'{g.name}'")
            self._drop_vdisk(vd)
            self.save()

    def _drop_vdisk(self, vd: VDisk) -> None:
        vd.disk.remove()
        del self.vdisks[vd.name]

    def _not_presented(self, vd: VDisk, doing: str) -> None:
        hosts = sorted(h for (v, h) in self.presentations if v == vd.name)
        if hosts:
            raise Refusal(IN_USE, f"virtual disk '{vd.name}' is presented to "
                                  f"{', '.join(hosts)} and cannot be {doing}")

    # ---- host I/O (the data path, not SMI-S) ------------------------------------------
    def write(self, name: str, offset: int, data: bytes) -> None:
        """Write bytes into a vdisk as a host would (copy-on-write and mirroring apply)."""
        with self.lock:
            vd = self.vdisk(name)
            if offset < 0 or offset + len(data) > vd.size:
                raise Refusal(INVALID, f"write beyond the end of '{name}'")
            self.ca_check_writable(name)
            pos = 0
            while pos < len(data):
                b, inner = divmod(offset + pos, BLOCK)
                n = min(len(data) - pos, vd.disk.block_len(b) - inner)
                if inner == 0 and n == vd.disk.block_len(b):
                    block = data[pos:pos + n]
                else:
                    old = bytearray(vd.disk.read_block(b))
                    old[inner:inner + n] = data[pos:pos + n]
                    block = bytes(old)
                self.write_block(vd, b, block, (inner, n))
                pos += n

    def read(self, name: str, offset: int, length: int) -> bytes:
        with self.lock:
            vd = self.vdisk(name)
            self._readable(vd)
            length = max(0, min(length, vd.size - offset))
            out = bytearray()
            while len(out) < length:
                b, inner = divmod(offset + len(out), BLOCK)
                out += vd.disk.read_block(b)[inner:inner + length - len(out)]
            return bytes(out)

    def _readable(self, vd: VDisk) -> None:
        for p in self.pairs.values():
            if p.target == vd.name and p.state == "broken":
                raise Refusal(FAILED, f"{p.kind} '{vd.name}' is broken (its disk group "
                                      "ran out of space) and holds no valid data")

    def write_block(self, vd: VDisk, b: int, data: bytes,
                    span: tuple[int, int] | None = None) -> None:
        """Every write to a block goes here: CA replication, copy-on-write, mirroring,
        delta tracking."""
        self.ca_replicate(vd.name, b, data, span)  # span: the bytes the host wrote
        for p in [p for p in self.pairs.values() if p.source == vd.name]:
            if p.state == "broken":
                continue
            tgt = self.vdisks[p.target]
            if tgt.disk.backing is vd.disk and b not in tgt.disk.own:
                if p.kind == "vsnap" and self.pool_free(tgt.pool) < BLOCK:
                    p.state = "broken"
                    continue
                tgt.disk.put_block(b, vd.disk.read_block(b))
            if p.kind == "mirrorclone" and p.state == "synchronized":
                tgt.disk.put_block(b, data)
            else:
                p.changed.add(b)
        for p in self.pairs.values():
            if p.target == vd.name:
                p.changed.add(b)
        vd.disk.put_block(b, data)

    # ---- presentation -------------------------------------------------------------------
    def present(self, vdisk: str, host: str, lun: int | None = None,
                read_only: bool = False) -> int:
        with self.lock:
            self.vdisk(vdisk)
            if host not in self.hosts:
                raise Missing(f"host '{host}' does not exist")
            if (vdisk, host) in self.presentations:
                raise Refusal(INVALID, f"virtual disk '{vdisk}' is already presented to "
                                       f"'{host}' as LUN {self.presentations[vdisk, host][0]}")
            for p in self.pairs.values():
                if p.target == vdisk and p.state in ("synchronized", "broken"):
                    raise Refusal(INVALID, f"{p.kind} '{vdisk}' is {p.state} and cannot be "
                                           "presented")
            used = {n for (v, h), (n, _) in self.presentations.items() if h == host}
            if lun is None:
                lun = next(n for n in range(1, 256) if n not in used)
            elif lun in used or not 0 <= lun < 256:
                raise Refusal(INVALID, f"LUN {lun} is already in use or invalid for "
                                       f"host '{host}'")
            self.presentations[vdisk, host] = (lun, read_only)
            self.save()
            return lun

    def unpresent(self, vdisk: str, host: str) -> None:
        with self.lock:
            if (vdisk, host) not in self.presentations:
                raise Missing(f"virtual disk '{vdisk}' is not presented to '{host}'")
            del self.presentations[vdisk, host]
            self.save()

    def host_port(self, host: str) -> HostPort:
        """The data path of a host: reads and writes by LUN, only on what is presented."""
        if host not in self.hosts:
            raise Missing(f"host '{host}' does not exist")
        return HostPort(self, host)

    def lun_target(self, host: str, lun: int, writing: bool) -> str:
        for (v, h), (n, ro) in self.presentations.items():
            if h == host and n == lun:
                if writing and ro:
                    raise Refusal(INVALID, f"LUN {lun} is read-only for host '{host}'")
                return v
        raise Missing(f"no LUN {lun} is presented to host '{host}'")

    # ---- groups and jobs ------------------------------------------------------------------
    def create_group(self, name: str, members: list[str]) -> None:
        with self.lock:
            if name in self.groups or name in self.sets:
                raise Refusal(INVALID, f"a group named '{name}' already exists")
            if not members:
                raise Refusal(INVALID, "a group needs at least one member")
            for m in members:
                self.vdisk(m)
            self.groups[name] = list(members)
            self.save()

    def delete_group(self, name: str) -> None:
        with self.lock:
            if name not in self.groups:
                raise Missing(f"group '{name}' does not exist")
            del self.groups[name]
            self.save()

    def start_job(self, name: str, affected: list[tuple[str, str]],
                  error: tuple[int, str] | None = None) -> Job:
        with self.lock:
            job = Job(self.next_id("JOB"), name, self.clock.now(), self.job_seconds, affected)
            if error:
                job.error_code, job.error_description = error
            self.jobs[job.id] = job
            for old in sorted(self.jobs)[:-200]:
                del self.jobs[old]
            self.save()
            return job

    def used_bytes_on_disk(self) -> int:
        """What the sparse files really hold (for benches)."""
        return sum(os.stat(v.disk.path).st_blocks * 512 for v in self.vdisks.values())

    def dump(self) -> str:
        return json.dumps({"pools": {n: self.pool_free(n) for n in self.pools},
                           "vdisks": sorted(self.vdisks)})


class HostPort:
    """A host's SAN view of the array: LUN-addressed reads and writes."""

    def __init__(self, array: EvaArray, host: str) -> None:
        self.array, self.host = array, host

    def write(self, lun: int, offset: int, data: bytes) -> None:
        with self.array.lock:
            self.array.write(self.array.lun_target(self.host, lun, True), offset, data)

    def read(self, lun: int, offset: int, length: int) -> bytes:
        with self.array.lock:
            return self.array.read(self.array.lun_target(self.host, lun, False), offset, length)

    def report_luns(self) -> list[dict[str, object]]:
        """REPORT LUNS + the device identifier page: each LUN presented to the host, its
        size and a naa id unique to this array's vdisk (a CA destination has its own)."""
        with self.array.lock:
            out = []
            for (v, h), (n, ro) in sorted(self.array.presentations.items(),
                                          key=lambda kv: kv[1][0]):
                if h == self.host:
                    vd = self.array.vdisk(v)
                    digest = hashlib.sha1(f"{self.array.name}/{vd.id}".encode()).hexdigest()
                    out.append({"lun": n, "size": vd.size, "read_only": ro,
                                "id": "naa.6001438" + digest[:25]})
            return out

    def allocated(self, lun: int) -> list[tuple[int, int]]:
        """Mapped extents (offset, length) of the LUN, in blocks of the array's grain."""
        with self.array.lock:
            vd = self.array.vdisk(self.array.lun_target(self.host, lun, False))
            blocks = sorted(vd.disk.allocated_blocks())
            return [(b * BLOCK, vd.disk.block_len(b)) for b in blocks]

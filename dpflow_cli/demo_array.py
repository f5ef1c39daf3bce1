"""The array part of the demo: a two-LUN group replicated while a host writes, restored.

The story: a simulated EVA (its own process, SMI-S over HTTPS with a verified
certificate) holds a LUN group `db` of two LUNs, `data` and `logs`, with real bytes. A
database host keeps writing to both (each log record after its data block, as a
database does) while dpflow takes replica sets of the group. Then the host stops, the
LUNs are restored from the latest replica set (Instant Recovery), and the bytes are
compared with the point in time, rebuilt from the writer's own journal: every write up
to the replica's moment is there, none after it, and the two LUNs are at one moment.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml

MiB = 1 << 20
BLOCK = 64 * 1024
RECORD = 512
PASSWORD_ENV = "DPFLOW_DEMO_EVA_PASSWORD"
POOL = "DG1"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}


class DependentWriter(threading.Thread):
    """A host writing dependent writes: data block n, then log record n (n = 1, 2, ...).

    Each write is one SAN write carrying its sequence number, and the journal keeps them,
    so the bytes of the LUNs at any moment can be rebuilt from the initial bytes.
    """

    def __init__(self, port: Any, data_lun: int, logs_lun: int, size: int,
                 pause_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.port, self.data_lun, self.logs_lun, self.size = port, data_lun, logs_lun, size
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.n = 0
        self.error: BaseException | None = None

    @staticmethod
    def data_write(n: int, size: int) -> tuple[int, bytes]:
        offset = (n * 7 % (size // BLOCK)) * BLOCK
        body = hashlib.blake2b(n.to_bytes(8, "big"), digest_size=64).digest()
        return offset, n.to_bytes(8, "big") + body * (BLOCK // 64 - 1) + body[:56]

    @staticmethod
    def log_write(n: int, size: int) -> tuple[int, bytes]:
        offset = (n * RECORD) % size
        return offset, n.to_bytes(8, "big") + b"L" * (RECORD - 8)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.n + 1
                self.port.write(self.data_lun, *self.data_write(n, self.size))
                self.port.write(self.logs_lun, *self.log_write(n, self.size))
                self.n = n
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    @classmethod
    def expected(cls, initial: bytes, upto: int, log: bool) -> bytes:
        """The LUN after writes 1..upto over `initial`."""
        out = bytearray(initial)
        write = cls.log_write if log else cls.data_write
        for n in range(1, upto + 1):
            off, data = write(n, len(initial))
            out[off:off + len(data)] = data
        return bytes(out)

    @classmethod
    def point_in_time(cls, initial: bytes, now: bytes, log: bool) -> int:
        """The last write a LUN holds (0 if none): the highest sequence number in it."""
        step = RECORD if log else BLOCK
        best = 0
        for off in range(0, len(now), step):
            if now[off:off + step] != initial[off:off + step]:
                best = max(best, int.from_bytes(now[off:off + 8], "big"))
        return best


def initial_bytes(size: int, seed: int) -> bytes:
    """Real-looking content: random regions between zeros (sparse where the LUN is empty)."""
    rnd = hashlib.blake2b(seed.to_bytes(4, "big"), digest_size=64).digest()
    out = bytearray(size)
    for i in range(0, size, 4 * MiB):
        chunk = hashlib.shake_256(rnd + i.to_bytes(8, "big")).digest(MiB)
        out[i:i + MiB] = chunk[: max(0, min(MiB, size - i))]
    return bytes(out)


def read_lun(port: Any, lun: int, size: int) -> bytes:
    return b"".join(port.read(lun, off, min(4 * MiB, size - off))
                    for off in range(0, size, 4 * MiB))


def write_lun(port: Any, lun: int, data: bytes) -> None:
    for off in range(0, len(data), 4 * MiB):
        piece = data[off:off + 4 * MiB]
        if piece.count(0) != len(piece):
            port.write(lun, off, piece)


def write_config(workdir: Path, eva: Any) -> Path:
    """The data-centre file of the array demo: the array only, its own catalog."""
    cfg = {
        "arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port, "user": eva.user,
                    "password": {"env": PASSWORD_ENV}, "ca_file": str(eva.ca_file),
                    "namespace": "root/eva", "backup_host": "proxy",
                    "replica_kind": "snapclone", "keep": 2, "policy": "strict"}],
        "stores": [{"name": "library", "path": "store"}],
        "catalog_url": "sqlite:///catalog.db",
    }
    path = workdir / "dpflow-array.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.environ[PASSWORD_ENV] = eva.password
    return path


def run_array_demo(workdir: Path, console: Any, lun_mib: int = 32
                   ) -> list[tuple[str, str, str]]:
    """Run the array story in `workdir` (made fresh); returns the report rows.

    Needs a Prefect server reachable as usual (PREFECT_API_URL, e.g. after
    `prefect_server.ensure_server()`); writes its own config `dpflow-array.yaml`.
    """
    import shutil

    from dpflow import prefect_server
    from drivers.smis import SmisArray
    from flows.luns import replicate_luns, restore_luns_from_replica
    from simulators.eva.process import EvaServer

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    rows: list[tuple[str, str, str]] = []
    size = lun_mib * MiB
    t_start = time.perf_counter()
    prefect_server.ensure_server()
    console.rule("[bold]array: Business Copy replicas and Instant Recovery")
    with EvaServer.start(workdir / "eva", pools={POOL: 16 * size}, hosts=HOSTS) as eva:
        eva.set_jobs(True, 0.2)
        console.print(f"EVA simulator (SMI-S over HTTPS, CA {eva.ca_file.name}): {eva.url}")
        config = str(write_config(workdir, eva))
        drv = SmisArray(eva.connection())
        try:
            drv.create_vdisk("data", size, POOL)
            drv.create_vdisk("logs", size, POOL)
            a, b = drv.present("data", "dbhost").lun, drv.present("logs", "dbhost").lun
        finally:
            drv.close()
        host = eva.host_port("dbhost")
        init_a, init_b = initial_bytes(size, 1), initial_bytes(size, 2)
        write_lun(host, a, init_a)
        write_lun(host, b, init_b)
        rows.append(("LUN group db", "created", f"data + logs, {lun_mib} MiB each, "
                     "presented to dbhost"))

        writer = DependentWriter(host, a, b, size)
        writer.start()
        try:
            while writer.n < 20 and writer.is_alive():
                time.sleep(0.01)
            results = [replicate_luns(config, "db", ["data", "logs"], "snapclone", keep=2)
                       for _ in range(3)]
            during = writer.n
            time.sleep(0.2)
        finally:
            writer.stop.set()
            writer.join()
        if writer.error:
            raise writer.error
        last = results[-1]
        for r in results:
            console.print(f"  replica set {r.replica_set}: {r.kind}, version {r.version_id}, "
                          f"presented to proxy as LUNs {r.presented_luns}, {r.seconds:.1f}s"
                          + (f", rotated away {r.rotated}" if r.rotated else ""))
        rows.append(("replicate db (snapclone) ×3", "completed" if all(
            r.status == "completed" for r in results) else "FAILED",
            f"{len(results)} sets while dbhost wrote {during} dependent writes; "
            f"{results[-1].seconds:.1f}s each"))
        from dpflow.environment import environment

        kept = [r.name for r in environment(config).catalog().replica_sets("db")]
        drv = SmisArray(eva.connection())
        try:
            on_array = sorted(s.name for s in drv.list_replica_sets())
            leftovers = [p for p in drv.list_presentations() if p.host == "proxy"]
        finally:
            drv.close()
        rotated_ok = len(kept) == 2 and sorted(kept) == on_array
        rows.append(("rotation keeps 2", "yes" if rotated_ok else "NO",
                     f"catalog {kept}, array {on_array}"))
        rows.append(("replicas unpresented from proxy", "yes" if not leftovers else "NO",
                     str([p.vdisk for p in leftovers]) if leftovers else "none left"))

        console.print("dbhost stopped; restore db from the latest replica set (IR)")
        live_a = read_lun(host, a, size)
        rr = restore_luns_from_replica(config, "db", last.replica_set, detach_hosts=True)
        got_a, got_b = read_lun(host, a, size), read_lun(host, b, size)
        na = DependentWriter.point_in_time(init_a, got_a, log=False)
        nb = DependentWriter.point_in_time(init_b, got_b, log=True)
        exact = (got_a == DependentWriter.expected(init_a, na, False)
                 and got_b == DependentWriter.expected(init_b, nb, True))
        consistent = na - nb in (0, 1) and 0 < na < writer.n
        rows.append((f"restore db from {rr.replica_set}", "completed",
                     f"{2 * size / 1e6:,.0f} MB of LUNs in {rr.seconds:.1f}s, "
                     f"hosts detached and given back: {', '.join(rr.detached)}"))
        rows.append(("restored = the point in time", "yes" if exact else "NO",
                     f"data holds writes 1..{na}, logs 1..{nb}, nothing later "
                     f"(the writer reached {writer.n}); bytes rebuilt from its journal"))
        rows.append(("one moment for both LUNs", "yes" if consistent else "NO",
                     "every log record's data block is there"))
        changed = live_a != got_a
        rows.append(("live LUNs had moved on", "yes" if changed else "NO",
                     "the restore really went back in time"))
    ok = all(r[1] in ("created", "completed", "yes") for r in rows)
    rows.append(("array demo", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t_start:.0f}s end to end"))
    return rows

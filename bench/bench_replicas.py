"""Replica creation and restore time on the simulated EVA, 1 GiB vs 16 GiB groups (sparse).

Why: Instant Recovery must not grow with LUN size where the real array's does not. Each
group has two vdisks with the same data written (64 MiB spread over the disk), the same
changes after the point in time (8 MiB), so only the size differs. Times are through the
real SMI-S driver over the in-process faked connection (sync answers).
Run: uv run python bench/bench_replicas.py
"""

from __future__ import annotations

import tempfile
import time

from drivers.protocols import ReplicaKind
from drivers.smis import SmisArray
from simulators.eva import EvaArray
from simulators.eva.cim import faked_connection

GiB, MiB = 1 << 30, 1 << 20


def run(size: int, kind: ReplicaKind) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        a = EvaArray(d)
        a.add_pool("DG1", 8 * size)
        drv = SmisArray(faked_connection(a))
        for n in ("data", "logs"):
            drv.create_vdisk(n, size, "DG1")
            for i in range(32):  # 64 MiB written per vdisk, spread over it
                a.write(n, i * (size // 32), b"\x5a" * (2 * MiB))
        t0 = time.perf_counter()
        drv.create_replica_set("bc", ["data", "logs"], kind)
        if kind == ReplicaKind.MIRRORCLONE:
            drv.fracture("bc")
        t1 = time.perf_counter()
        for n in ("data", "logs"):
            for i in range(8):  # 8 MiB changed after the point in time
                a.write(n, i * (size // 8), b"\xa5" * MiB)
        t2 = time.perf_counter()
        drv.restore("bc")
        t3 = time.perf_counter()
        a.close()
        return t1 - t0, t3 - t2


def main() -> None:
    print(f"{'kind':<12}{'size':>8}{'create s':>10}{'restore s':>11}")
    for kind in ReplicaKind:
        for size in (GiB, 16 * GiB):
            run(size, kind)  # warm-up
            c, r = run(size, kind)
            print(f"{kind.value:<12}{size // GiB:>6}Gi{c:>10.3f}{r:>11.3f}")


if __name__ == "__main__":
    main()

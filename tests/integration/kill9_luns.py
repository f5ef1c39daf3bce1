"""kill -9 of `dpflow restore luns GROUP --detach-hosts` (used by test_kill9): the command
killed while it detaches the hosts' LUNs, restores them from the replica set, or gives
them back, each step slowed by the array (a provider that takes 2.5 s) so that the kill
lands inside it; then what the next run must leave: nothing presented to the backup host,
the hosts' LUNs at their numbers, the killed sessions closed as aborted, the LUNs bit for
bit the replica's point in time."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from dpflow.catalog import ObjectRow, SessionRow
from dpflow.environment import environment
from dpflow_cli.demo_array import initial_bytes, read_lun, write_lun
from drivers.smis import SmisArray
from simulators.eva.process import EvaServer

MiB = 1 << 20
SIZE, POOL, GROUP = 2 * MiB, "DG1", "k9g"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}
STEPS = ("HidePaths", "ModifyReplicaSynchronization", "ExposePaths")
HANG_S = 2.5  # below the array's 3 s call timeout: the step is slow, not failed


def start_eva(root: Path) -> Any:
    return EvaServer.start(root, pools={POOL: 32 * MiB}, hosts=HOSTS)


class LunRestoreKills:
    """The group (two LUNs presented to dbhost, a vsnap replica set, one LUN changed after
    it), the kills, and the checks after the next run."""

    def __init__(self, eva: EvaServer, root: Path, rng: random.Random, n: int,
                 run_cli: Any) -> None:
        from flows.luns import replicate_luns

        self.eva, self.killed = eva, []
        root.mkdir(parents=True, exist_ok=True)
        doc = {"arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port,
                           "user": eva.user, "password": {"env": "DPFLOW_TEST_EVA_PASSWORD"},
                           "ca_file": str(eva.ca_file), "backup_host": "proxy",
                           "timeout_s": 3.0, "job_deadline_s": 20, "replica_kind": "vsnap",
                           "keep": 2, "pool": POOL}],
               "stores": [{"name": "library", "path": str(root / "store")}],
               "catalog_url": f"sqlite:///{root / 'catalog.db'}"}
        self.cfg = str(root / "luns.yaml")
        Path(self.cfg).write_text(yaml.safe_dump(doc))
        self.drv = SmisArray(eva.connection(timeout=30.0), poll_s=0.02)
        self.luns, self.point = {}, {}
        for i, name in enumerate(("k9-a", "k9-b")):
            self.drv.create_vdisk(name, SIZE, POOL)
            self.luns[name] = self.drv.present(name, "dbhost").lun
            self.point[name] = initial_bytes(SIZE, i + 1)
            write_lun(eva.host_port("dbhost"), self.luns[name], self.point[name])
        replicate_luns(self.cfg, GROUP, list(self.luns), "vsnap")
        eva.host_port("dbhost").write(self.luns["k9-a"], 0, b"changed after the replica")
        for _ in range(n):
            step = rng.choice(STEPS)
            eva.faults.hang(method=step, seconds=HANG_S, count=1)
            p = run_cli(self.cfg, "restore", "luns", GROUP, "--detach-hosts")
            deadline = time.monotonic() + 120
            while not eva.faults.fired().get(step.lower()):  # the slow step has begun
                assert p.poll() is None, f"restore luns ended before {step}"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, HANG_S * 0.8))
            assert p.poll() is None, "restore luns ended before it could be killed"
            p.send_signal(signal.SIGKILL)
            p.wait()
            eva.faults.clear()
            self.killed.append(step)
        print(f"restore luns killed in: {', '.join(self.killed)}")

    def rerun(self) -> None:
        """The next run (it waits out the killed session's lease)."""
        from flows.luns import restore_luns_from_replica

        restore_luns_from_replica(self.cfg, GROUP, None, True)

    def check(self) -> None:
        pres = self.drv.list_presentations()
        assert [p for p in pres if p.host == "proxy"] == [], "left presented to the backup host"
        assert {p.vdisk: p.lun for p in pres if p.host == "dbhost"} == self.luns
        port = self.eva.host_port("dbhost")
        for name, lun in self.luns.items():
            assert read_lun(port, lun, SIZE) == self.point[name], f"{name} not bit for bit"
        cat = environment(self.cfg).catalog()
        with cat.session() as db:
            states = [s for (s,) in db.execute(
                select(SessionRow.status).join(SessionRow.object)
                .where(ObjectRow.name == GROUP, SessionRow.kind == "restore-luns")
                .order_by(SessionRow.started))]
        assert states == ["aborted"] * len(self.killed) + ["completed"], states
        assert not cat.running_sessions()
        owned = {r.name for r in cat.replica_sets(array="eva1")}
        assert {s.name for s in self.drv.list_replica_sets()} == owned

    def close(self) -> None:
        self.drv.close()

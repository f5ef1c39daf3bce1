"""Two sites, two work pools ('site A proxies', 'site B proxies') with a real process worker
each, the catalog on a real PostgreSQL: backup-vms sends each VM to its site's pool; a
worker killed with -9 (with its flow-run processes) mid-backup has its VM backed up by the
other pool in the same night, and leaves no snapshot, no open session, no half version."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dpflow.errors import UserError

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
POOLS = {"site-a": "site A proxies", "site-b": "site B proxies"}


def start_worker(pool: str, proxy: str, log: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), DPFLOW_PROXY=proxy,
               PREFECT_WORKER_QUERY_SECONDS="1")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool",
                                 pool], cwd=ROOT, env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def tree(pid: int) -> list[int]:
    """The process and its descendants (a process worker's flow runs are its children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    for pid in tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def test_killed_worker_vm_is_backed_up_by_the_other_pool(vcsim, postgres, dc_config,
                                                          tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from deployments.pools import deploy_pools
    from dpflow.catalog import Catalog
    from flows.maintenance import verify_media
    from flows.night import backup_vms
    from simulators.vcsim import Vcsim

    postgres.create_db("pools")
    conf = yaml.safe_load(dc_config.read_text())
    site_b = Vcsim(work_dir=tmp_path / "vc-b").start()
    workers: list[subprocess.Popen] = []
    try:
        vc_a = {**conf["vcenters"][0], "name": "site-a", "work_pool": POOLS["site-a"]}
        vc_b = {**vc_a, "name": "site-b", "port": site_b.port, "ca_file": str(site_b.ca_file),
                "work_pool": POOLS["site-b"]}
        conf.update(vcenters=[vc_a, vc_b], proxies=[{"name": "proxy-a"}, {"name": "proxy-b"}],
                    catalog_url=postgres.url("pools", driver="psycopg"))
        dc_config.write_text(yaml.safe_dump(conf))
        cfg = str(dc_config)
        monkeypatch.setenv("DPFLOW_PROXY", "proxy-a")
        with pytest.raises(UserError) as info:  # deploy time: the pools are not there yet
            deploy_pools(cfg)
        assert "work pool 'site A proxies' does not exist" in str(info.value)
        assert "\n" not in str(info.value)
        with get_client(sync_client=True) as client:
            for pool in POOLS.values():
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        assert set(deploy_pools(cfg)) == set(POOLS.values())

        vcsim.create_vm(a1 := f"pa-{os.getpid()}", [32 << 20])  # 8 range reads, ~6 s
        vcsim.seed_disk(a1, 0, os.urandom(32 << 20))
        site_b.create_vm(b1 := f"pb-{os.getpid()}", [4 << 20])
        site_b.seed_disk(b1, 0, os.urandom(4 << 20))
        vcsim.set_fault(path=r"-flat\.vmdk$", kind="delay", ms=1500, count=0)  # a slow copy
        workers = [start_worker(POOLS["site-a"], "proxy-a", tmp_path / "worker-a.log"),
                   start_worker(POOLS["site-b"], "proxy-b", tmp_path / "worker-b.log")]
        results: list = []
        night = threading.Thread(target=contextvars.copy_context().run, args=(
            lambda: results.extend(backup_vms(cfg, [a1, b1])),))
        night.start()
        deadline = time.monotonic() + 240
        while vcsim.snapshot_count(a1) == 0:  # site A's worker is copying a1's disk
            assert night.is_alive() and time.monotonic() < deadline, "a1 was never snapshotted"
            time.sleep(0.1)
        kill_tree(workers[0])
        vcsim.clear_faults()  # the retry on site B copies at full speed
        night.join(timeout=400)
        assert not night.is_alive()

        by_vm = {r.vm: r for r in results}
        assert by_vm[b1].status == "completed"
        assert by_vm[a1].status == "completed", by_vm[a1].message
        assert "the worker of 'site A proxies' died" in by_vm[a1].message
        assert vcsim.snapshot_count(a1) == 0 and site_b.snapshot_count(b1) == 0
        cat = Catalog(conf["catalog_url"])
        assert cat.running_sessions() == []
        sessions = [cat.get_session(v.session_id) for v in cat.versions(a1)]
        assert [s.id for s in sessions] == [by_vm[a1].session_id]  # one version, the retry's
        with get_client(sync_client=True) as client:
            dead = next(s for s in _a1_sessions(cat, a1) if s.status == "aborted")
            (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[dead.flow_run_id])))
            assert run.state is not None and run.state.is_crashed()
        cat.close()
        report = verify_media(cfg)
        assert report.ok and report.versions == 2
    finally:
        vcsim.clear_faults()
        for w in workers:
            if w.poll() is None:
                kill_tree(w)
        site_b.stop()


def _a1_sessions(cat, vm: str) -> list:
    from sqlalchemy import select

    from dpflow.catalog import ObjectRow, SessionRow

    with cat.session() as db:
        return list(db.scalars(select(SessionRow).join(ObjectRow)
                               .where(ObjectRow.name == vm)))

"""Deploy-time refusals through the real entry point (`python deployments/pools.py`)
against the real local Prefect server: what the server will not take is one line on
stderr and exit code 2, with nothing deployed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
POOL = "refusing site proxies"
TRIGGER = "dpflow_test_refuse_proxy_limits"


def server_db() -> Path:
    return Path(os.environ["PREFECT_HOME"]) / "prefect.db"


def test_limits_the_server_refuses_are_one_line_and_exit_2_at_deploy_time(
        prefect_server, tmp_path: Path) -> None:
    """The server's database refuses new concurrency limits of the proxy 'refused-*' (a
    trigger, as a database policy would): `deployments/pools.py` says so in one line that
    names the limit, exits 2, and the pool gets no deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    from dpflow.locks import limit_name
    from dpflow.pools import deployment_name

    proxy = f"refused-{os.getpid()}"
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(yaml.safe_dump({
        "vcenters": [{"name": "vc-r", "host": "127.0.0.1", "port": 9, "user": "u",
                      "password": {"env": "DPFLOW_TEST_UNUSED_PW"}, "work_pool": POOL}],
        "proxies": [{"name": proxy}],
        "stores": [{"name": "library", "path": str(tmp_path / "store")}],
        "catalog_url": f"sqlite:///{tmp_path / 'catalog.db'}"}))
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    db = sqlite3.connect(server_db(), timeout=30)
    try:
        db.execute(f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON concurrency_limit_v2 "
                   f"WHEN NEW.name LIKE 'dpflow-proxy-refused%' BEGIN "
                   f"SELECT RAISE(ABORT, 'concurrency limits are managed centrally'); END")
        db.commit()
        done = subprocess.run(
            [sys.executable, "deployments/pools.py", "--dc", str(cfg)], cwd=ROOT,
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "DPFLOW_TEST_UNUSED_PW": "x"})
    finally:
        db.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        db.commit()
        db.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dpflow: cannot create the concurrency limits "
                               f"{limit_name('proxy', proxy)} on the Prefect server: ")
    with get_client(sync_client=True) as client:
        assert client.read_deployments(work_pool_filter=WorkPoolFilter(
            name=WorkPoolFilterName(any_=[POOL]))) == []
        names = {d.name for d in client.read_deployments()}
        assert deployment_name(POOL) not in names

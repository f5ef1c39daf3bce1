"""Shared fixtures: one vcsim per test session (HTTPS, verified), a Prefect test server,
and a fresh data-centre file, store and catalog per test."""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# pytest keeps the newest three base temp dirs under one root per user and deletes older
# ones: two checkouts testing at once would delete each other's simulators and servers.
# One root per checkout (read lazily by pytest's tmp_path factory).
_checkout = hashlib.sha1(__file__.encode()).hexdigest()[:8]
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT",
                      str(Path(tempfile.gettempdir()) / f"dpflow-tests-{_checkout}"))
Path(os.environ["PYTEST_DEBUG_TEMPROOT"]).mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from simulators.vcsim import Vcsim

    with Vcsim(work_dir=tmp_path_factory.mktemp("vcsim")) as sim:
        yield sim


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real local `prefect server` (SQLite), as the CLI and demo use: unlike the test
    harness's ephemeral server it runs every service, e.g. the one that expires the
    concurrency leases of killed sessions."""
    from dpflow import prefect_server as ps

    home = tmp_path_factory.mktemp("dpflow-home")
    os.environ["DPFLOW_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    url = ps.ensure_server()
    # stopped at exit, after Prefect's log worker (registered later, so run earlier) has
    # drained to it: stopping it first makes that worker retry for a minute
    atexit.register(ps.stop_server)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@pytest.fixture
def dc_config(tmp_path: Path, vcsim: object, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data-centre file pointing at the session's vcsim, with its own store and catalog."""
    monkeypatch.setenv("DPFLOW_TEST_VC_PASSWORD", vcsim.password)
    monkeypatch.setenv("DPFLOW_TEST_STORE_KEY", "ab" * 32)  # integration tests run encrypted
    cfg = {
        "vcenters": [{"name": "vcsim", "host": vcsim.host, "port": vcsim.port,
                      "user": vcsim.username, "password": {"env": "DPFLOW_TEST_VC_PASSWORD"},
                      "ca_file": str(vcsim.ca_file)}],
        "stores": [{"name": "library", "path": "store",
                    "key": {"env": "DPFLOW_TEST_STORE_KEY"}}],
        "snapshot": {"quiesce": "prefer", "quiesce_attempts": 2},
    }
    path = tmp_path / "dpflow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A real PostgreSQL (Debian's package), started once for the tests that need it."""
    from bench.postgres import Postgres

    with Postgres() as pg:
        yield pg

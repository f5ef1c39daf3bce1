"""The catalog on a real PostgreSQL (Debian's, started by the `postgres` fixture), through
psycopg: what PostgreSQL enforces and SQLite did not (column lengths, time zones, types),
and a VM backed up and restored with its catalog there."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import yaml

from dpflow.catalog import Catalog
from dpflow.errors import NotFound

_db = itertools.count()


def new_db(pg) -> str:
    name = f"catalog{next(_db)}"
    pg.create_db(name)
    return pg.url(name, driver="psycopg")


def test_catalog_on_postgresql_keeps_long_paths_notes_and_times(postgres) -> None:
    cat = Catalog(new_db(postgres).replace("postgresql+psycopg://", "postgresql://"))
    assert cat.engine.dialect.driver == "psycopg"  # a bare postgresql:// URL gets psycopg
    sid = cat.begin_session("backup-files", "vmfiles", "web01")
    deep = "/" + "/".join(["d" * 200] * 30) + "/f\u00e9"  # 6,000+ characters, non-ASCII
    note = "crash-consistent; 1 problem(s): " + "x" * 3000
    when = datetime(2026, 12, 3, 1, 2, 3, tzinfo=UTC)
    files = [{"volume": "p1", "path": deep, "kind": "file", "size": 5, "mtime_ns": 2**62,
              "inode": 2**40, "target": None, "digest": "ab" * 32, "chunks": "[]",
              "changed": True},
             {"volume": "p1", "path": "/link", "kind": "symlink", "size": 0, "mtime_ns": 0,
              "inode": 7, "target": deep, "digest": None, "chunks": None, "changed": True}]
    cat.commit_file_version(version_id=sid, session_id=sid, name="web01", store="lib",
                            created=when, quiesced=False, level="full", base_version_id=None,
                            bytes_read=5, bytes_added=5, files=files, volumes="[]", note=note)
    cat.end_session(sid, "completed", "m" * 5000, 5, 5)
    (fs,) = cat.file_sets("web01")
    assert fs.version.note == note and fs.version.created == when
    got = {f.path: f for f in cat.files(sid)}
    assert got[deep].mtime_ns == 2**62 and got[deep].inode == 2**40
    assert got["/link"].target == deep
    assert cat.get_session(sid).status == "completed"
    assert not cat.abort_session(sid, "ended already")
    cat.forget_version(sid)
    with pytest.raises(NotFound):
        cat.file_set(sid)
    cat.close()


def test_backup_and_restore_with_the_catalog_on_postgresql(postgres, prefect_server, vcsim,
                                                           dc_config, tmp_path) -> None:
    from flows.vm_image import backup_vm_image, restore_vm_image
    from tests.integration.test_vm_image import disk_bytes, new_vm

    url = new_db(postgres)
    conf = yaml.safe_load(dc_config.read_text())
    conf["catalog_url"] = url
    dc_config.write_text(yaml.safe_dump(conf))
    vm, (data,) = new_vm(vcsim, tmp_path, [8 * 1024 * 1024])
    r = backup_vm_image(str(dc_config), vm)
    assert r.status == "completed" and vcsim.snapshot_count(vm) == 0
    cat = Catalog(url)
    assert [v.id for v in cat.versions(vm)] == [r.version_id]  # in PostgreSQL, not a file
    assert not list(tmp_path.glob("*.db"))
    rr = restore_vm_image(str(dc_config), vm, r.version_id, as_name=f"{vm}-pg")
    assert rr.verified and disk_bytes(vcsim, f"{vm}-pg", 0, len(data)) == data
    assert {s.status for s in cat.running_sessions()} == set()
    cat.close()


def test_prefect_server_on_postgresql_records_a_flow_and_its_lock(postgres, tmp_path) -> None:
    """`prefect server start` with PREFECT_API_DATABASE_CONNECTION_URL (asyncpg): a flow
    that takes a dpflow lock (a global concurrency limit with a lease) runs against it, and
    its run is a row in PostgreSQL."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import psycopg

    postgres.create_db("prefect")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=postgres.url("prefect"))
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                                  stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        code = ("from prefect import flow\n"
                "from dpflow.locks import exclusive\n"
                "@flow(name='on-postgres')\n"
                "def f() -> int:\n"
                "    with exclusive('vm', 'pg-check'):\n"
                "        return 7\n"
                "assert f() == 7\n")
        subprocess.run([sys.executable, "-c", code], env=dict(env, PREFECT_API_URL=api),
                       check=True, timeout=300, capture_output=True)
        dsn = postgres.url("prefect", driver="x").replace("postgresql+x", "postgresql")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT f.name, r.state_type FROM flow_run r JOIN flow f "
                                "ON f.id = r.flow_id").fetchall()
            limits = conn.execute("SELECT name FROM concurrency_limit_v2").fetchall()
        assert [(n, str(s).rsplit(".", 1)[-1]) for n, s in rows] == [("on-postgres", "COMPLETED")]
        assert any(n.startswith("dpflow-vm-pg-check") for (n,) in limits)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)

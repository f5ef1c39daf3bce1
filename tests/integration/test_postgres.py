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

"""Leftovers of dead runs: sessions closed as aborted, temporary packs and registrations
removed, each reported. Real catalog (SQLite), real store, real dead processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dpflow.catalog import Catalog, SessionRow
from dpflow.errors import NotFound
from dpflow.leftovers import close_orphan_sessions
from dpflow.store import ChunkStore
from dpflow.store.maintenance import TEMP_GRACE_S, prune, register_backup, sweep_temp


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def never(kind: str, name: str) -> bool:
    return False


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")


def set_owner(cat: Catalog, sid: str, *, pid: int | None = None, host: str | None = "keep",
              age_h: float = 0) -> None:
    with cat.session() as db, db.begin():
        row = db.get(SessionRow, sid)
        if pid is not None:
            row.pid = pid
        if host != "keep":
            row.host = host
        row.started = datetime.now(UTC) - timedelta(hours=age_h)


def test_a_session_whose_process_died_is_closed_as_aborted_and_reported(catalog):
    dead = catalog.begin_session("restore-files", "vmfiles", "web01")
    set_owner(catalog, dead, pid=dead_pid())
    alive = catalog.begin_session("restore-files", "vmfiles", "db01")  # this process
    lines = close_orphan_sessions(catalog, own=None, held=None, lock_free=never)
    assert len(lines) == 1 and dead in lines[0] and "restore-files of web01" in lines[0]
    row = catalog.get_session(dead)
    assert row.status == "aborted" and "is gone" in row.message and row.ended is not None
    assert catalog.get_session(alive).status == "running"
    assert close_orphan_sessions(catalog, own=None, held=None, lock_free=never) == []


def test_a_dry_run_lists_without_closing(catalog):
    dead = catalog.begin_session("restore-files", "vmfiles", "web01")
    set_owner(catalog, dead, pid=dead_pid())
    assert len(close_orphan_sessions(catalog, own=None, held=None, lock_free=never,
                                     apply=False)) == 1
    assert catalog.get_session(dead).status == "running"


def test_a_locked_session_is_orphaned_once_its_lock_is_free_or_ours(catalog):
    other_host = catalog.begin_session("backup-image", "vm", "web01")
    set_owner(catalog, other_host, host="proxy-b")  # its pid cannot be asked from here
    own = catalog.begin_session("backup-image", "vm", "web01")
    assert close_orphan_sessions(catalog, own=own, held=None, lock_free=never) == []
    # the caller holds the lock on web01: the other session cannot be alive
    lines = close_orphan_sessions(catalog, own=own, held=("vm", "web01"), lock_free=never)
    assert len(lines) == 1 and other_host in lines[0] and "lock on vm web01" in lines[0]
    assert catalog.get_session(own).status == "running"

    third = catalog.begin_session("replicate-luns", "lungroup", "oradata")
    set_owner(catalog, third, host="proxy-b")
    asked = []

    def free(kind: str, name: str) -> bool:
        asked.append((kind, name))
        return True
    lines = close_orphan_sessions(catalog, own=own, held=None, lock_free=free)
    assert asked == [("lungroup", "oradata")] and third in lines[0]


def test_an_unlocked_session_of_another_host_is_orphaned_only_when_stale(catalog):
    fresh = catalog.begin_session("restore-files", "vmfiles", "web01")
    set_owner(catalog, fresh, host="proxy-b", age_h=1)
    old = catalog.begin_session("restore-files", "vmfiles", "web02")
    set_owner(catalog, old, host=None, age_h=25)  # a row from before owners were recorded
    lines = close_orphan_sessions(catalog, own=None, held=None, lock_free=never)
    assert len(lines) == 1 and old in lines[0]
    assert catalog.get_session(fresh).status == "running"


def test_an_older_catalog_gets_the_owner_columns(tmp_path):
    path = tmp_path / "old.db"
    Catalog(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE sessions DROP COLUMN host")
        db.execute("ALTER TABLE sessions DROP COLUMN pid")
    cat = Catalog(f"sqlite:///{path}")
    sid = cat.begin_session("backup-image", "vm", "web01")
    assert cat.get_session(sid).pid == os.getpid()


# --- the store side -----------------------------------------------------------------------
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from dpflow.store import ChunkStore
s = ChunkStore(Path(sys.argv[1])).init()
data = os.urandom(100_000)
s.put(s.chunk_id(data), data)  # a temporary pack, never sealed
os.kill(os.getpid(), signal.SIGKILL)
"""


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_sweep_removes_what_dead_writers_left_and_keeps_live_ones(tmp_path):
    root = tmp_path / "store"
    store = ChunkStore(root).init()
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root)], check=False)
    (left,) = store.tmp_dir.glob("*.pack.tmp")
    data = os.urandom(50_000)
    store.put(store.chunk_id(data), data)  # this process's pack: a live writer holds it
    live = next(p for p in store.tmp_dir.glob("*.pack.tmp") if p != left)
    register_backup(store, "dead-backup")
    info = (store.locks_dir / "dead-backup.session")
    info.write_text(info.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead_pid()}'))
    register_backup(store, "live-backup")
    info_size = info.stat().st_size

    assert sweep_temp(store) == [("locks/dead-backup.session", info_size)]
    assert left.exists()  # younger than the grace period: its writer may be starting
    for p in (left, live):
        age(p, TEMP_GRACE_S + 5)
    size = left.stat().st_size
    assert sweep_temp(store, apply=False) == [(f"tmp/{left.name}", size)]
    assert left.exists()  # a dry run
    assert sweep_temp(store) == [(f"tmp/{left.name}", size)]
    assert not left.exists() and live.exists()
    assert (store.locks_dir / "live-backup.session").exists()
    assert not info.exists()
    store.flush()  # the live writer was not disturbed
    assert store.get(store.chunk_id(data)) == data
    store.close()


def test_prune_reports_the_temporary_files_it_removes(tmp_path):
    root = tmp_path / "store"
    store = ChunkStore(root).init()
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root)], check=False)
    (left,) = store.tmp_dir.glob("*.pack.tmp")
    age(left, TEMP_GRACE_S + 5)
    dry = prune(store, apply=False)
    assert dry.temp_removed == [(f"tmp/{left.name}", left.stat().st_size)] and left.exists()
    report = prune(store, apply=True)
    assert report.temp_files_removed == 1 and report.temp_removed == dry.temp_removed
    assert not left.exists()


def test_a_read_never_creates_a_store(tmp_path):
    typo = tmp_path / "stroe"
    with pytest.raises(NotFound, match=f"no store at {typo}"):
        ChunkStore(typo).init(create=False)
    assert not typo.exists()

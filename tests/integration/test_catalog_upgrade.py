"""A catalog made by an older dpflow is upgraded when a newer one opens it, on the real
PostgreSQL (the `postgres` fixture) and on SQLite: its bounded text columns widened, the
columns, indexes and tables added since created, its rows kept."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    inspect,
    text,
)

from dpflow.catalog import Catalog

_db = itertools.count()
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def old_schema() -> MetaData:
    """The catalog's tables as dpflow created them before paths, link targets and notes
    became unbounded text, before sessions had an owner (host, pid) or a flow-run index,
    versions a protection time and files a chunk size. Its image-disk and replica tables
    are left out: the upgrade must create missing tables too."""
    md = MetaData()
    Table("objects", md, Column("id", Integer, primary_key=True),
          Column("kind", String(32), nullable=False), Column("name", String(255), nullable=False),
          UniqueConstraint("kind", "name"))
    Table("sessions", md, Column("id", String(32), primary_key=True),
          Column("kind", String(32), nullable=False),
          Column("object_id", ForeignKey("objects.id"), nullable=False),
          Column("status", String(16), nullable=False),
          Column("message", String(2000), nullable=False), Column("flow_run_id", String(64)),
          Column("started", DateTime(timezone=True), nullable=False),
          Column("ended", DateTime(timezone=True)),
          Column("bytes_read", BigInteger, nullable=False),
          Column("bytes_written", BigInteger, nullable=False))
    Table("versions", md, Column("id", String(32), primary_key=True),
          Column("object_id", ForeignKey("objects.id"), nullable=False),
          Column("session_id", ForeignKey("sessions.id"), nullable=False),
          Column("store", String(255), nullable=False),
          Column("created", DateTime(timezone=True), nullable=False),
          Column("quiesced", Boolean, nullable=False),
          Column("bytes_read", BigInteger, nullable=False),
          Column("bytes_added", BigInteger, nullable=False),
          Column("note", String(2000), nullable=False))
    Table("file_sets", md, Column("version_id", ForeignKey("versions.id"), primary_key=True),
          Column("level", String(8), nullable=False), Column("base_version_id", String(32)),
          Column("files", Integer, nullable=False),
          Column("files_changed", Integer, nullable=False),
          Column("volumes", Text, nullable=False))
    Table("files", md, Column("id", Integer, primary_key=True),
          Column("version_id", ForeignKey("versions.id"), nullable=False, index=True),
          Column("volume", String(255), nullable=False),
          Column("path", String(4096), nullable=False), Column("kind", String(8), nullable=False),
          Column("size", BigInteger, nullable=False),
          Column("mtime_ns", BigInteger, nullable=False),
          Column("ctime_ns", BigInteger), Column("mode", Integer), Column("uid", BigInteger),
          Column("gid", BigInteger), Column("owner", String(255)), Column("attributes", BigInteger),
          Column("inode", BigInteger, nullable=False), Column("nlink", Integer, nullable=False),
          Column("target", String(4096)), Column("digest", String(64)), Column("chunks", Text),
          Column("changed", Boolean, nullable=False))
    return md


def make_old_catalog(url: str) -> None:
    """An old catalog with one file-level version in it."""
    engine = create_engine(url)
    old_schema().create_all(engine)
    with engine.begin() as db:
        db.execute(text("INSERT INTO objects (id, kind, name) VALUES (1, 'vmfiles', 'old01')"))
        db.execute(text("INSERT INTO sessions (id, kind, object_id, status, message, started, "
                        "bytes_read, bytes_written) VALUES ('s1', 'backup-files', 1, "
                        "'completed', '', :t, 1, 1)"), {"t": WHEN})
        db.execute(text("INSERT INTO versions (id, object_id, session_id, store, created, "
                        "quiesced, bytes_read, bytes_added, note) VALUES ('s1', 1, 's1', 'lib', "
                        ":t, false, 1, 1, 'old')"), {"t": WHEN})
        db.execute(text("INSERT INTO file_sets VALUES ('s1', 'full', NULL, 1, 1, '[]')"))
        db.execute(text("INSERT INTO files (version_id, volume, path, kind, size, mtime_ns, "
                        "inode, nlink, changed) VALUES ('s1', 'p1', '/etc/hosts', 'file', 1, 0, "
                        "2, 1, true)"))
    engine.dispose()


def open_and_store_a_long_path(url: str) -> tuple[Catalog, list[str]]:
    cat = Catalog(url)
    deep = "/" + "/".join(["d" * 250] * 20) + "/f"  # 5,000+ characters
    assert len(deep) > 4096
    sid = cat.begin_session("backup-files", "vmfiles", "old01", flow_run_id="run-1")
    files: list[dict[str, Any]] = [
        {"volume": "p1", "path": deep, "kind": "file", "size": 1, "mtime_ns": 0, "inode": 3,
         "target": None, "chunks": "[]", "chunk_size": 1 << 20, "changed": True},
        {"volume": "p1", "path": "/l", "kind": "symlink", "size": 0, "mtime_ns": 0, "inode": 4,
         "target": deep, "chunks": None, "chunk_size": None, "changed": True}]
    cat.commit_file_version(version_id=sid, session_id=sid, name="old01", store="lib",
                            created=datetime.now(UTC), quiesced=False, level="full",
                            base_version_id=None, bytes_read=1, bytes_added=1, files=files,
                            volumes="[]", note="n" * 3000)
    got = {f.path: f for f in cat.files(sid)}
    assert got[deep].chunk_size == 1 << 20 and got["/l"].target == deep
    assert cat.version(sid).note == "n" * 3000
    assert cat.get_session(sid).host and cat.session_of_flow_run("run-1") is not None
    old = cat.version("s1")
    assert old.note == "old" and old.created == WHEN and old.protected_until is None
    assert [f.path for f in cat.files("s1")] == ["/etc/hosts"]
    return cat, cat.upgraded


def test_an_old_postgresql_catalog_is_upgraded_and_stores_a_path_over_4096(postgres) -> None:
    name = f"oldcatalog{next(_db)}"
    postgres.create_db(name)
    url = postgres.url(name, driver="psycopg")
    make_old_catalog(url)
    cat, changes = open_and_store_a_long_path(url)
    cols = {(t, c["name"]): c["type"] for t in ("files", "versions", "sessions")
            for c in inspect(cat.engine).get_columns(t)}
    assert {str(cols[k]) for k in [("files", "path"), ("files", "target"),
                                   ("versions", "note")]} == {"TEXT"}
    assert {"files.path: VARCHAR(4096) -> TEXT", "files.target: VARCHAR(4096) -> TEXT",
            "versions.note: VARCHAR(2000) -> TEXT", "sessions.host: added",
            "sessions.pid: added", "versions.protected_until: added",
            "files.chunk_size: added", "sessions: index ix_sessions_flow_run_id"} <= set(changes)
    assert {"disks: created", "replica_sets: created", "replica_members: created"} <= set(changes)
    cat.close()
    again = Catalog(url)  # a second open finds nothing to do
    assert again.upgraded == []
    again.close()


def test_an_old_sqlite_catalog_is_upgraded_and_stores_a_path_over_4096(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_old_catalog(url)
    cat, changes = open_and_store_a_long_path(url)
    assert {"sessions.host: added", "versions.protected_until: added",
            "files.chunk_size: added", "sessions: index ix_sessions_flow_run_id",
            "disks: created"} <= set(changes)
    assert not [c for c in changes if "->" in c]  # SQLite does not enforce VARCHAR lengths
    cat.close()
    assert Catalog(url).upgraded == []

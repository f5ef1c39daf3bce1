"""The catalog: sessions, protected objects, versions and their disks (SQLAlchemy 2).

SQLite by default, any SQLAlchemy URL: PostgreSQL for many proxies, through psycopg 3
(`postgresql://` means `postgresql+psycopg://`). A version row is
inserted only after its manifest is durable in the store, in one transaction with its
disks: the catalog never lists a version that cannot be restored.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from dpflow.catalog_schema import upgrade
from dpflow.errors import NotFound, UserError


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class Base(DeclarativeBase):
    pass


class ObjectRow(Base):
    """A protected object: a VM today, a database or LUN group later."""

    __tablename__ = "objects"
    __table_args__ = (UniqueConstraint("kind", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))


class SessionRow(Base):
    """One run of a path (backup, restore ...) on one object: what happened and how long."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id"))
    status: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str] = mapped_column(String(2000), default="")
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the owner process:
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # how a dead one is found
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_written: Mapped[int] = mapped_column(BigInteger, default=0)
    object: Mapped[ObjectRow] = relationship()


class VersionRow(Base):
    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id"))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    store: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    quiesced: Mapped[bool] = mapped_column(Boolean)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    bytes_added: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    protected_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    object: Mapped[ObjectRow] = relationship()
    disks: Mapped[list[DiskRow]] = relationship(back_populates="version", order_by="DiskRow.key",
                                                cascade="all, delete-orphan")


class DiskRow(Base):
    __tablename__ = "disks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"))
    key: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(255))
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    chunks_stored: Mapped[int] = mapped_column(Integer)
    version: Mapped[VersionRow] = relationship(back_populates="disks")


class ReplicaSetRow(Base):
    """A version whose media is a disk array: one replica set of a LUN group.

    Written with its version in one transaction, only once the set is complete on the
    array; rotation marks it removed (the version row stays, as history).
    """

    __tablename__ = "replica_sets"
    __table_args__ = (UniqueConstraint("array", "name"),)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    array: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    requested_kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="available")  # or "removed"
    removed: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[VersionRow] = relationship()
    members: Mapped[list[ReplicaMemberRow]] = relationship(order_by="ReplicaMemberRow.position")


class ReplicaMemberRow(Base):
    __tablename__ = "replica_members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    replica_set_id: Mapped[str] = mapped_column(ForeignKey("replica_sets.version_id"))
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class ReplicaCatalog:
    """Replica sets (versions on an array) of LUN groups: object kind 'lungroup'."""

    engine: Any
    session: Any
    _object: Any

    def commit_replica_set(self, *, version_id: str, session_id: str, group: str, array: str,
                           name: str, kind: str, requested_kind: str, created: datetime,
                           members: list[dict[str, Any]], note: str = "") -> None:
        """The version and its replica set, in one transaction: it now exists."""
        with self.session() as db, db.begin():
            size = sum(int(m["size_bytes"]) for m in members)
            v = VersionRow(id=version_id, object=self._object(db, "lungroup", group),
                           session_id=session_id, store=f"array:{array}", created=created,
                           quiesced=False, bytes_read=0, bytes_added=size, note=note)
            db.add(v)
            rs = ReplicaSetRow(version=v, array=array, name=name, kind=kind,
                               requested_kind=requested_kind)
            rs.members = [ReplicaMemberRow(position=i, **m) for i, m in enumerate(members)]
            db.add(rs)

    def replica_sets(self, group: str | None = None, array: str | None = None,
                     include_removed: bool = False) -> list[ReplicaSetRow]:
        """Oldest first."""
        with self.session() as db:
            q = (select(ReplicaSetRow).join(VersionRow).join(ObjectRow)
                 .where(ObjectRow.kind == "lungroup"))
            if group is not None:
                q = q.where(ObjectRow.name == group)
            if array is not None:
                q = q.where(ReplicaSetRow.array == array)
            if not include_removed:
                q = q.where(ReplicaSetRow.status == "available")
            rows = list(db.scalars(q.order_by(VersionRow.created, VersionRow.id)))
            for r in rows:
                _ = r.version.object, r.members
            return rows

    def replica_set(self, group: str, which: str | None = None) -> ReplicaSetRow:
        """The latest available replica set of a group, or the one named (or version id)."""
        rows = self.replica_sets(group)
        if which is not None:
            rows = [r for r in rows if which in (r.name, r.version_id)]
            if not rows:
                raise NotFound(f"no available replica set '{which}' of LUN group '{group}': "
                               f"`dpflow replicas {group}` lists them")
        if not rows:
            raise NotFound(f"no replica set of LUN group '{group}' in the catalog: "
                           f"`dpflow replicate {group} LUN...` takes one")
        return rows[-1]

    def mark_replica_removed(self, version_id: str) -> None:
        with self.session() as db, db.begin():
            row = db.get(ReplicaSetRow, version_id)
            if row is None:
                raise NotFound(f"no replica set with version {version_id}")
            row.status, row.removed = "removed", now()


class FileSetRow(Base):
    """A file-level version of a VM (object kind 'vmfiles'): its level and base.

    Every version lists every file (unchanged ones point at the chunks stored before), so
    any version restores on its own; `changed` on a file says this version read it.
    """

    __tablename__ = "file_sets"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    level: Mapped[str] = mapped_column(String(8))  # full | incr | diff
    base_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    files: Mapped[int] = mapped_column(Integer, default=0)
    files_changed: Mapped[int] = mapped_column(Integer, default=0)
    volumes: Mapped[str] = mapped_column(Text, default="[]")  # JSON: what each volume was
    version: Mapped[VersionRow] = relationship()


class FileRow(Base):
    __tablename__ = "files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), index=True)
    volume: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # no length: NTFS paths reach 32,767 characters
    kind: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attributes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    inode: Mapped[int] = mapped_column(BigInteger, default=0)
    nlink: Mapped[int] = mapped_column(Integer, default=1)
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chunks: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list, None = zeros
    chunk_size: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of `chunks`
    changed: Mapped[bool] = mapped_column(Boolean, default=True)


class FileCatalog:
    """File-level versions of VMs: commit in one transaction, list, read back."""

    session: Any
    _object: Any

    def commit_file_version(self, *, version_id: str, session_id: str, name: str, store: str,
                            created: datetime, quiesced: bool, level: str,
                            base_version_id: str | None, bytes_read: int, bytes_added: int,
                            files: list[dict[str, Any]], volumes: str, note: str = "") -> None:
        with self.session() as db, db.begin():
            v = VersionRow(id=version_id, object=self._object(db, "vmfiles", name),
                           session_id=session_id, store=store, created=created,
                           quiesced=quiesced, bytes_read=bytes_read, bytes_added=bytes_added,
                           note=note)
            db.add(v)
            db.add(FileSetRow(version=v, level=level, base_version_id=base_version_id,
                              files=len(files), volumes=volumes,
                              files_changed=sum(1 for f in files if f.get("changed"))))
            db.flush()
            if files:
                db.execute(cast(Table, FileRow.__table__).insert(),  # one executemany
                           [{**f, "version_id": version_id} for f in files])

    def file_sets(self, name: str) -> list[FileSetRow]:
        """File-level versions of a VM, oldest first."""
        with self.session() as db:
            q = (select(FileSetRow).join(VersionRow).join(ObjectRow)
                 .where(ObjectRow.kind == "vmfiles", ObjectRow.name == name)
                 .order_by(VersionRow.created, VersionRow.id))
            rows = list(db.scalars(q))
            for r in rows:
                _ = r.version.object
            return rows

    def file_set(self, version_id: str) -> FileSetRow:
        with self.session() as db:
            row: FileSetRow | None = db.get(FileSetRow, version_id)
            if row is None:
                raise NotFound(f"'{version_id}' is not a file-level version: "
                               f"`dpflow versions` lists image versions")
            _ = row.version.object
            return row

    def files(self, version_id: str, volume: str | None = None) -> list[FileRow]:
        with self.session() as db:
            q = select(FileRow).where(FileRow.version_id == version_id)
            if volume is not None:
                q = q.where(FileRow.volume == volume)
            return list(db.scalars(q.order_by(FileRow.volume, FileRow.path)))


class Catalog(ReplicaCatalog, FileCatalog):
    def __init__(self, url: str) -> None:
        """Open (and create or extend) the catalog; a URL that names no usable database
        is a UserError naming it (password hidden), before anything else happens."""
        try:
            url = _with_driver(url)
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, future=True)
            if url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self.upgraded: list[str] = upgrade(self.engine, Base.metadata)  # what changed
        except (SQLAlchemyError, OSError, ImportError) as exc:
            why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise UserError(f"cannot open the catalog {_shown(url)}: {why}; check catalog_url "
                            f"in the config") from exc

    def close(self) -> None:
        """Release the catalog's database connections."""
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _object(self, db: Session, kind: str, name: str) -> ObjectRow:
        row = db.scalar(select(ObjectRow).where(ObjectRow.kind == kind, ObjectRow.name == name))
        if row is None:
            row = ObjectRow(kind=kind, name=name)
            db.add(row)
            db.flush()
        return row

    # --- sessions --------------------------------------------------------------
    def begin_session(self, kind: str, object_kind: str, name: str,
                      flow_run_id: str | None = None) -> str:
        with self.session() as db, db.begin():
            row = SessionRow(kind=kind, object=self._object(db, object_kind, name),
                             flow_run_id=flow_run_id, host=socket.gethostname(),
                             pid=os.getpid())
            db.add(row)
            db.flush()
            return row.id

    def end_session(self, session_id: str, status: str, message: str = "",
                    bytes_read: int = 0, bytes_written: int = 0) -> None:
        with self.session() as db, db.begin():
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"no session {session_id}")
            row.status, row.message, row.ended = status, message[:2000], now()
            row.bytes_read, row.bytes_written = bytes_read, bytes_written

    def running_sessions(self) -> list[SessionRow]:
        """Sessions still marked running, oldest first (some may have lost their owner)."""
        with self.session() as db:
            q = select(SessionRow).where(SessionRow.status == "running")
            rows = list(db.scalars(q.order_by(SessionRow.started)))
            for r in rows:
                _ = r.object
            return rows

    def abort_session(self, session_id: str, message: str) -> bool:
        """Close a session whose owner is gone as `aborted` (a note it left stays after the
        reason); False if it ended meanwhile."""
        with self.session() as db, db.begin():
            done = db.execute(update(SessionRow)
                              .where(SessionRow.id == session_id,
                                     SessionRow.status == "running")
                              .values(status="aborted", message=_appended(message),
                                      ended=now()))
            return bool(getattr(done, "rowcount", 0))

    def note_session(self, session_id: str, text: str) -> None:
        """Append `text` to a session's message now, whatever its state: what a later run
        must know even if this one is killed (an abort keeps it)."""
        with self.session() as db, db.begin():
            db.execute(update(SessionRow).where(SessionRow.id == session_id)
                       .values(message=_appended(text, first=False)))

    def sessions_of(self, kind: str, name: str) -> list[SessionRow]:
        """The sessions of one kind on one object, oldest first."""
        with self.session() as db:
            q = select(SessionRow).join(ObjectRow).where(SessionRow.kind == kind,
                                                         ObjectRow.name == name)
            rows = list(db.scalars(q.order_by(SessionRow.started)))
            for r in rows:
                _ = r.object
            return rows

    def get_session(self, session_id: str) -> SessionRow:
        with self.session() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"no session {session_id}")
            _ = row.object
            return row

    def session_of_flow_run(self, flow_run_id: str) -> SessionRow | None:
        """The latest session a flow run opened (how a run on another worker is followed)."""
        with self.session() as db:
            q = (select(SessionRow).where(SessionRow.flow_run_id == flow_run_id)
                 .order_by(SessionRow.started.desc()).limit(1))
            row = db.scalar(q)
            if row is not None:
                _ = row.object
            return row

    def version_of_session(self, session_id: str) -> str | None:
        """The version a session made, if it made one."""
        with self.session() as db:
            return db.scalar(select(VersionRow.id).where(VersionRow.session_id == session_id))

    # --- versions --------------------------------------------------------------
    def commit_version(self, *, version_id: str, session_id: str, object_kind: str, name: str,
                       store: str, created: datetime, quiesced: bool, bytes_read: int,
                       bytes_added: int, disks: list[dict[str, Any]], note: str = "",
                       protected_until: datetime | None = None) -> None:
        with self.session() as db, db.begin():
            v = VersionRow(id=version_id, object=self._object(db, object_kind, name),
                           session_id=session_id, store=store, created=created,
                           quiesced=quiesced, bytes_read=bytes_read, bytes_added=bytes_added,
                           note=note, protected_until=protected_until)
            v.disks = [DiskRow(**d) for d in disks]
            db.add(v)

    def versions(self, name: str | None = None, object_kind: str = "vm") -> list[VersionRow]:
        with self.session() as db:
            q = select(VersionRow).join(ObjectRow).where(ObjectRow.kind == object_kind)
            if name is not None:
                q = q.where(ObjectRow.name == name)
            rows = list(db.scalars(q.order_by(VersionRow.created)))
            for r in rows:
                _ = r.object, r.disks
            return rows

    def versions_in_store(self, store: str) -> list[VersionRow]:
        """Every version the catalog keeps in one store (image and file-level), oldest first."""
        with self.session() as db:
            q = select(VersionRow).where(VersionRow.store == store)
            rows = list(db.scalars(q.order_by(VersionRow.created, VersionRow.id)))
            for r in rows:
                _ = r.object, r.disks
            return rows

    def version(self, version_id: str) -> VersionRow:
        with self.session() as db:
            row = db.get(VersionRow, version_id)
            if row is None:
                raise NotFound(f"unknown version '{version_id}': `dpflow versions` lists them")
            _ = row.object, row.disks
            return row

    def protect(self, version_id: str, until: datetime | None) -> None:
        """Protection time: forget never removes a version before `until`."""
        with self.session() as db, db.begin():
            row = db.get(VersionRow, version_id)
            if row is None:
                raise NotFound(f"unknown version '{version_id}': `dpflow versions` lists them")
            row.protected_until = until

    def forget_version(self, version_id: str) -> None:
        """Remove a version from the catalog (its manifest goes first; prune frees chunks)."""
        with self.session() as db, db.begin():
            row = db.get(VersionRow, version_id)
            if row is None:
                return
            if row.object.kind == "lungroup":
                raise UserError(f"version {version_id} is a replica set on an array: it is "
                                f"removed by rotation, not by forget")
            db.execute(delete(FileRow).where(FileRow.version_id == version_id))
            db.execute(delete(FileSetRow).where(FileSetRow.version_id == version_id))
            db.delete(row)

    def latest_version(self, name: str, object_kind: str = "vm") -> VersionRow:
        rows = self.versions(name, object_kind)
        if not rows:
            raise NotFound(f"no version of {object_kind} '{name}' in the catalog: back it up first")
        return rows[-1]


def _shown(url: str) -> str:
    """A catalog URL fit for a message: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _with_driver(url: str) -> str:
    """A PostgreSQL URL without a driver gets psycopg 3, the one dpflow installs
    (SQLAlchemy's default, psycopg2, is not a dependency)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _appended(text: str, first: bool = True) -> Any:
    """SQL for the message with `text` put before (first) or after the current one."""
    old = SessionRow.message
    joined = (literal(text) + "; " + old) if first else (old + "; " + literal(text))
    return func.substr(case((old == "", literal(text)), else_=joined), 1, 2000)

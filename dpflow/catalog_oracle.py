"""Oracle ZDB sessions in the catalog: one row ties a replica set to its logs and control file.

A Zero Downtime Backup is restorable only as a whole: the datafiles' replica set on the
array, the archived logs from the backup's start SCN, and the backup control file in the
store ("snapshot data alone does not suffice for a restore"). So the replica set's
version, its members and this row are written in one transaction, after the logs and
the control file are durable in the store. Rotation later removes the replica set (its
row says so); the logs and control file stay catalogued here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dpflow.catalog import (
    Base,
    Catalog,
    ObjectRow,
    ReplicaMemberRow,
    ReplicaSetRow,
    VersionRow,
)
from dpflow.errors import NotFound


class OracleBackupRow(Base):
    __tablename__ = "oracle_backups"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    database: Mapped[str] = mapped_column(String(64), index=True)
    begin_scn: Mapped[int] = mapped_column(BigInteger)
    end_scn: Mapped[int] = mapped_column(BigInteger)  # after END BACKUP: the earliest IR point
    archived_scn: Mapped[int] = mapped_column(BigInteger)  # after ARCHIVE LOG CURRENT
    resetlogs_scn: Mapped[int] = mapped_column(BigInteger)
    store: Mapped[str] = mapped_column(String(255))
    logs: Mapped[str] = mapped_column(Text)  # JSON: [{sequence, first_scn, next_scn, name, ...}]
    controlfile: Mapped[str] = mapped_column(Text)  # JSON: {name, size, chunks}
    datafiles: Mapped[str] = mapped_column(Text)  # JSON: [{file_no, name, vdisk}]
    media_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[VersionRow] = relationship()

    def log_list(self) -> list[dict[str, Any]]:
        return list(json.loads(self.logs))


def group_of(database: str) -> str:
    """The LUN group under which a database's replica sets are rotated."""
    return f"oracle:{database.upper()}"


def _ensure(cat: Catalog) -> None:
    OracleBackupRow.__table__.create(cat.engine, checkfirst=True)  # type: ignore[attr-defined]


def commit_oracle_backup(cat: Catalog, *, version_id: str, session_id: str, database: str,
                         array: str, replica_set: str, kind: str, requested_kind: str,
                         created: datetime, members: list[dict[str, Any]], begin_scn: int,
                         end_scn: int, archived_scn: int, resetlogs_scn: int, store: str,
                         logs: list[dict[str, Any]], controlfile: dict[str, Any],
                         datafiles: list[dict[str, Any]], note: str = "",
                         media_version_id: str | None = None) -> None:
    """Version, replica set, members and the Oracle row in one transaction."""
    _ensure(cat)
    with cat.session() as db, db.begin():
        size = sum(int(m["size_bytes"]) for m in members)
        v = VersionRow(id=version_id, object=cat._object(db, "lungroup", group_of(database)),
                       session_id=session_id, store=f"array:{array}", created=created,
                       quiesced=True, bytes_read=0, bytes_added=size, note=note)
        db.add(v)
        rs = ReplicaSetRow(version=v, array=array, name=replica_set, kind=kind,
                           requested_kind=requested_kind)
        rs.members = [ReplicaMemberRow(position=i, **m) for i, m in enumerate(members)]
        db.add(rs)
        db.add(OracleBackupRow(version=v, database=database.upper(), begin_scn=begin_scn,
                               end_scn=end_scn, archived_scn=archived_scn,
                               resetlogs_scn=resetlogs_scn, store=store,
                               logs=json.dumps(logs), controlfile=json.dumps(controlfile),
                               datafiles=json.dumps(datafiles),
                               media_version_id=media_version_id))


def oracle_backups(cat: Catalog, database: str) -> list[tuple[OracleBackupRow, ReplicaSetRow]]:
    """Every ZDB session of `database`, oldest first, with its replica set row."""
    _ensure(cat)
    with cat.session() as db:
        q = (select(OracleBackupRow, ReplicaSetRow)
             .join(ReplicaSetRow, ReplicaSetRow.version_id == OracleBackupRow.version_id)
             .join(VersionRow, VersionRow.id == OracleBackupRow.version_id)
             .join(ObjectRow).where(OracleBackupRow.database == database.upper())
             .order_by(VersionRow.created, VersionRow.id))
        rows = [(o, r) for o, r in db.execute(q)]
        for o, r in rows:
            _ = o.version, r.members
        return rows


def oracle_backup(cat: Catalog, database: str, which: str | None = None,
                  on_media: bool = False) -> tuple[OracleBackupRow, ReplicaSetRow]:
    """The latest ZDB of `database` whose replica is still on the array (on_media: whose
    LUN images are in the store), or the one named by replica set name or version id."""
    rows = oracle_backups(cat, database)
    if on_media:
        rows = [(o, r) for o, r in rows if o.media_version_id]
    else:
        rows = [(o, r) for o, r in rows if r.status == "available"]
    if which is not None:
        rows = [(o, r) for o, r in rows if which in (r.name, o.version_id)]
        if not rows:
            raise NotFound(f"no replica '{which}' of database {database.upper()} on the array: "
                           f"`dpflow recover oracle {database} --list` shows what can be used")
    if not rows:
        where = "LUN images in the store" if on_media else "a replica on the array"
        raise NotFound(f"no Zero Downtime Backup of database {database.upper()} with {where}: "
                       f"`dpflow backup oracle {database}"
                       f"{' --to-media' if on_media else ''}` takes one")
    return rows[-1]

"""What the catalog says a store holds: the versions it expects a manifest of, and the
chunks it names itself (file lists, Oracle logs) rather than through a manifest. Verify
checks both; prune counts the chunks as references."""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlalchemy import inspect, select

from dpflow.catalog import Catalog, FileRow, VersionRow
from dpflow.catalog_oracle import OracleBackupRow
from dpflow.store.maintenance import Catalogued


def catalog_refs(cat: Catalog, store_name: str) -> Iterator[tuple[str, str]]:
    """(version, chunk) pairs the catalog holds rather than a manifest: the files of
    file-level versions and the archived logs and control files of Oracle backups. Prune
    and verify count them as references too."""
    with cat.session() as db:
        q = (select(FileRow.version_id, FileRow.chunks).join(VersionRow)
             .where(VersionRow.store == store_name, FileRow.chunks.is_not(None)))
        for vid, chunks in db.execute(q):
            for cid in json.loads(chunks or "[]"):
                if cid:
                    yield vid, cid
        if not inspect(cat.engine).has_table(OracleBackupRow.__tablename__):
            return
        oq = (select(OracleBackupRow.version_id, OracleBackupRow.logs,
                     OracleBackupRow.controlfile).where(OracleBackupRow.store == store_name))
        for vid, logs, controlfile in db.execute(oq):
            for item in [*json.loads(logs), json.loads(controlfile)]:
                for chunk in item.get("chunks", []):
                    yield vid, chunk["id"]


def catalogued_in_store(cat: Catalog, store_name: str) -> list[Catalogued]:
    """Every version the catalog expects a manifest of in this store: image and file-level
    versions, and the LUN images of Oracle backups copied to media."""
    out = [Catalogued(v.id, v.object.name,
                      {d.key: d.chunks_stored for d in v.disks}
                      if v.object.kind == "vm" else None)
           for v in cat.versions_in_store(store_name)]
    if inspect(cat.engine).has_table(OracleBackupRow.__tablename__):
        with cat.session() as db:
            q = (select(OracleBackupRow.media_version_id, OracleBackupRow.database)
                 .where(OracleBackupRow.store == store_name,
                        OracleBackupRow.media_version_id.is_not(None)))
            out += [Catalogued(str(mid), f"oracle:{name}") for mid, name in db.execute(q)]
    return out

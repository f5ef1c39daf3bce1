"""Store maintenance steps: verify, forget by policy, prune; and backup registration."""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlalchemy import select

from dpflow.catalog import FileRow, VersionRow
from dpflow.environment import Environment
from dpflow.retention import Candidate, KeepPolicy, decide
from dpflow.store.maintenance import (
    Catalogued,
    PruneReport,
    VerifyReport,
    prune,
    register_backup,
    unregister_backup,
    verify,
)
from dpflow.store.manifest import delete_manifest
from tasks.common import step


def _file_refs(env: Environment, store_name: str) -> Iterator[tuple[str, str]]:
    """(version, chunk) pairs of file-level versions: they live in the catalog, not in
    manifests, and must count as references too."""
    cat = env.catalog()
    with cat.session() as db:
        q = (select(FileRow.version_id, FileRow.chunks).join(VersionRow)
             .where(VersionRow.store == store_name, FileRow.chunks.is_not(None)))
        for vid, chunks in db.execute(q):
            for cid in json.loads(chunks or "[]"):
                if cid:
                    yield vid, cid


@step(name="register backup with store")
def register(env: Environment, store: str | None, session_id: str) -> None:
    register_backup(env.store(store), session_id)


@step(name="unregister backup from store", retries=3)
def unregister(env: Environment, store: str | None, session_id: str) -> None:
    unregister_backup(env.store(store), session_id)


@step(name="verify store", retries=0)
def verify_store(env: Environment, store: str | None, read_percent: float) -> VerifyReport:
    """Catalog ↔ manifests ↔ chunks for every version the catalog keeps in this store."""
    name = env.dc.store(store).name
    catalogued = [Catalogued(v.id, v.object.name,
                             {d.key: d.chunks_stored for d in v.disks}
                             if v.object.kind == "vm" else None)
                  for v in env.catalog().versions_in_store(name)]
    return verify(env.store(store), catalogued, read_percent=read_percent,
                  extra=list(_file_refs(env, name)))


@step(name="decide retention", retries=0)
def plan_forget(env: Environment, store: str | None, vm: str | None,
                policy: KeepPolicy) -> dict[str, dict[str, list[str]]]:
    """Per object: version id → reasons to keep (empty = forget)."""
    name = env.dc.store(store).name
    out: dict[str, dict[str, list[str]]] = {}
    for kind in ("vm", "vmfiles"):
        rows = [v for v in env.catalog().versions(vm, object_kind=kind) if v.store == name]
        by_object: dict[str, list[Candidate]] = {}
        for v in rows:
            by_object.setdefault(f"{kind}:{v.object.name}", []).append(
                Candidate(id=v.id, created=v.created, protected_until=v.protected_until))
        for obj, cands in by_object.items():
            out[obj] = decide(cands, policy)
    return out


@step(name="forget version", retries=2)
def forget(env: Environment, store: str | None, version_id: str) -> None:
    """Manifest first, then catalog row: a catalogued version always has its manifest."""
    delete_manifest(env.store(store), version_id)
    env.catalog().forget_version(version_id)


@step(name="prune store", retries=0)
def prune_store(env: Environment, store: str | None, apply: bool) -> PruneReport:
    return prune(env.store(store), apply=apply,
                 extra=list(_file_refs(env, env.dc.store(store).name)))

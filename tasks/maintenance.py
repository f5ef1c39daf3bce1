"""Store maintenance steps: verify, forget by policy, prune; and backup registration."""

from __future__ import annotations

from prefect import get_run_logger
from pydantic import BaseModel

from dpflow.catalog_refs import catalog_refs, catalogued_in_store
from dpflow.environment import Environment
from dpflow.leftovers import close_orphan_sessions
from dpflow.locks import is_free
from dpflow.retention import Candidate, KeepPolicy, decide
from dpflow.store.maintenance import (
    PruneReport,
    VerifyReport,
    prune,
    register_backup,
    sweep_temp,
    unregister_backup,
    verify,
)
from dpflow.store.manifest import delete_manifest
from tasks.common import step


def _refs(env: Environment, store_name: str) -> list[tuple[str, str]]:
    return list(catalog_refs(env.catalog(), store_name))


class Leftovers(BaseModel):
    """What dead runs left behind and this run cleaned up (or, in a dry run, would)."""

    applied: bool = True
    sessions: list[str] = []  # one line each: id, what it was, why it was closed
    temp_files: list[tuple[str, int]] = []  # (file in the store, bytes)

    def lines(self) -> list[str]:
        close, remove = ("closed", "removed") if self.applied else ("would close", "would remove")
        return [f"{close} as aborted: {s}" for s in self.sessions] + [
            f"{remove} leftover {f} ({n:,} bytes)" for f, n in self.temp_files]


@step(name="clean up leftovers", retries=2)
def clean_leftovers(env: Environment, store: str | None, own_session: str | None = None,
                    held: tuple[str, str] | None = None, apply: bool = True) -> Leftovers:
    """Close the sessions whose owner is gone as `aborted` and remove the temporary files
    dead writers left in the store; every one is logged. `held` is the (kind, object) lock
    this run holds: other sessions on it cannot be alive."""
    out = Leftovers(
        applied=apply,
        sessions=close_orphan_sessions(env.catalog(), own=own_session, held=held,
                                       lock_free=is_free, apply=apply),
        temp_files=sweep_temp(env.store(store), apply=apply))
    log = get_run_logger()
    for line in out.lines():
        log.warning("%s", line)
    return out


@step(name="register backup with store")
def register(env: Environment, store: str | None, session_id: str) -> None:
    """Only backups register, and a backup may create its store (the first one does)."""
    register_backup(env.store(store, create=True), session_id)


@step(name="unregister backup from store", retries=3)
def unregister(env: Environment, store: str | None, session_id: str) -> None:
    unregister_backup(env.store(store), session_id)


@step(name="verify store", retries=0)
def verify_store(env: Environment, store: str | None, read_percent: float) -> VerifyReport:
    """Catalog ↔ manifests ↔ chunks for every version the catalog keeps in this store."""
    name = env.dc.store(store).name
    catalogued = catalogued_in_store(env.catalog(), name)
    return verify(env.store(store), catalogued, read_percent=read_percent,
                  extra=_refs(env, name))


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
                 extra=_refs(env, env.dc.store(store).name))

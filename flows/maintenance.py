"""Media management: verify the store, forget versions by policy, prune unused chunks."""

from __future__ import annotations

from prefect import flow, get_run_logger

from dpflow import events
from dpflow.environment import Environment, open_environment
from dpflow.retention import KeepPolicy
from dpflow.store.maintenance import PruneReport, StoreDamaged, VerifyReport
from tasks.maintenance import clean_leftovers, forget, plan_forget, prune_store, verify_store


@flow(name="verify-store")
def verify_media(dc: str, store: str | None = None, read_percent: float = 0.0
                 ) -> VerifyReport:
    """Every catalogued version has its manifest and its chunks (and, for read_percent of
    them, they decrypt and hash right). A version that cannot be restored fails the run."""
    with open_environment(dc) as env:
        report = verify_store(env, store, read_percent)
        log = get_run_logger()
        for vid in report.uncatalogued:
            log.warning("manifest %s is in the store but no catalog row names it (a backup "
                        "stopped between the two); prune keeps its chunks", vid)
        announce_verify(env, store, report)
        if not report.ok:
            for vid, why in report.unrestorable.items():
                log.error("version %s cannot be restored: %s", vid, why)
            exc = StoreDamaged(f"store damaged: {len(report.unrestorable)} of {report.versions} "
                               f"version(s) cannot be restored, {len(report.damaged)} chunk(s) "
                               f"damaged or missing")
            exc.report = report
            raise exc
        return report


@flow(name="forget-versions")
def forget_versions(dc: str, policy: KeepPolicy, vm: str | None = None,
                    store: str | None = None, apply: bool = False
                    ) -> dict[str, dict[str, list[str]]]:
    """Apply a keep policy; a dry run unless `apply`. Never forgets a protected version."""
    with open_environment(dc) as env:
        clean_leftovers(env, store, apply=apply)
        plan = plan_forget(env, store, vm, policy)
        if apply:
            gone = []
            for decisions in plan.values():
                for version_id, reasons in decisions.items():
                    if not reasons:
                        forget(env, store, version_id)
                        gone.append(version_id)
            events.emit("dpflow.forget.completed", "store", env.dc.store(store).name,
                        forgotten=gone)
        return plan


@flow(name="prune-store")
def prune_media(dc: str, store: str | None = None, apply: bool = False) -> PruneReport:
    """Free the chunks no version references; defers while a backup runs. Sessions whose
    owner is gone are closed as aborted and temporary files dead writers left are removed
    first (a dry run lists them)."""
    with open_environment(dc) as env:
        left = clean_leftovers(env, store, apply=apply)
        report = prune_store(env, store, apply)
        report.leftover_sessions = left.sessions
        report.temp_removed = left.temp_files + [t for t in report.temp_removed
                                                 if t not in left.temp_files]
        if apply:
            events.emit("dpflow.prune.completed", "store", env.dc.store(store).name)
        return report


def announce_verify(env: Environment, store: str | None, report: VerifyReport) -> None:
    """dpflow.verify.completed for the store, or one dpflow.verify.damage per object whose
    versions cannot be restored (an automation answers it, e.g. with a full backup)."""
    name = env.dc.store(store).name
    if report.ok:
        events.emit("dpflow.verify.completed", "store", name, versions=report.versions,
                    chunks_checked=report.chunks_checked)
        return
    broken: dict[tuple[events.Kind, str], list[str]] = {}
    cat = env.catalog()
    for vid in report.unrestorable:
        row = cat.version(vid)
        obj_kind = events.KIND_OF_OBJECT.get(row.object.kind)
        if obj_kind is not None:
            broken.setdefault((obj_kind, row.object.name), []).append(vid)
    for (kind, obj), vids in broken.items():
        events.emit("dpflow.verify.damage", kind, obj, version_id=vids[-1], store=name,
                    versions=vids, message=report.unrestorable[vids[-1]])

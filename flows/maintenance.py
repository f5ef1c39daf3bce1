"""Media management: verify the store, forget versions by policy, prune unused chunks."""

from __future__ import annotations

from prefect import flow, get_run_logger

from dpflow.environment import open_environment
from dpflow.retention import KeepPolicy
from dpflow.store.maintenance import PruneReport, StoreDamaged, VerifyReport
from tasks.maintenance import forget, plan_forget, prune_store, verify_store


@flow(name="verify-store")
def verify_media(config: str, store: str | None = None, read_percent: float = 0.0
                 ) -> VerifyReport:
    """Every catalogued version has its manifest and its chunks (and, for read_percent of
    them, they decrypt and hash right). A version that cannot be restored fails the run."""
    with open_environment(config) as env:
        report = verify_store(env, store, read_percent)
    log = get_run_logger()
    for vid in report.uncatalogued:
        log.warning("manifest %s is in the store but no catalog row names it (a backup "
                    "stopped between the two); prune keeps its chunks", vid)
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
def forget_versions(config: str, policy: KeepPolicy, vm: str | None = None,
                    store: str | None = None, apply: bool = False
                    ) -> dict[str, dict[str, list[str]]]:
    """Apply a keep policy; a dry run unless `apply`. Never forgets a protected version."""
    with open_environment(config) as env:
        plan = plan_forget(env, store, vm, policy)
        if apply:
            for decisions in plan.values():
                for version_id, reasons in decisions.items():
                    if not reasons:
                        forget(env, store, version_id)
        return plan


@flow(name="prune-store")
def prune_media(config: str, store: str | None = None, apply: bool = False) -> PruneReport:
    """Free the chunks no version references; defers while a backup runs."""
    with open_environment(config) as env:
        return prune_store(env, store, apply)

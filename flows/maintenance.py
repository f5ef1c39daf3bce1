"""Media management: verify the store, forget versions by policy, prune unused chunks."""

from __future__ import annotations

from prefect import flow, get_run_logger

from dpflow.retention import KeepPolicy
from dpflow.store.maintenance import PruneReport, VerifyReport
from tasks.maintenance import forget, plan_forget, prune_store, verify_store


@flow(name="verify-store")
def verify_media(config: str, store: str | None = None, read_percent: float = 0.0
                 ) -> VerifyReport:
    """Every version's chunks exist (and, for read_percent of them, decrypt and hash right)."""
    report = verify_store(config, store, read_percent)
    if not report.ok:
        get_run_logger().error("store damaged: %d chunk(s) break %d version(s)",
                               len(report.damaged),
                               len({v for vs in report.damaged.values() for v in vs}))
    return report


@flow(name="forget-versions")
def forget_versions(config: str, policy: KeepPolicy, vm: str | None = None,
                    store: str | None = None, apply: bool = False
                    ) -> dict[str, dict[str, list[str]]]:
    """Apply a keep policy; a dry run unless `apply`. Never forgets a protected version."""
    plan = plan_forget(config, store, vm, policy)
    if apply:
        for decisions in plan.values():
            for version_id, reasons in decisions.items():
                if not reasons:
                    forget(config, store, version_id)
    return plan


@flow(name="prune-store")
def prune_media(config: str, store: str | None = None, apply: bool = False) -> PruneReport:
    """Free the chunks no version references; defers while a backup runs."""
    return prune_store(config, store, apply)

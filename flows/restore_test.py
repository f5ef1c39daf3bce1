"""Restore tests: prove a version restorable by restoring it, booting it and checking it.

verify_restore: version (latest by default) → every chunk read back → a new VM under a
test name, its one NIC on an isolated port group (never the production VM, never its
network) → disks written and read back against the manifest → guest file systems parsed
from the restored disks, the VM's check-spec files found with their digests → powered on
→ guest heartbeat awaited → probes → the test VM destroyed, on every exit path → a signed
proof of what was checked, recorded in the catalog, shown as an artifact, announced as a
dpflow.proof.passed / .failed event.

A check that finds a fault does not raise: the proof records it as failed and the later
checks that depend on it as skipped. The flow run itself fails (and the CLI exits 1) when
the proof does, so a scheduled test that failed is never green.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from dpflow.catalog import VersionRow
from dpflow.environment import Environment, open_environment
from dpflow.errors import DpflowError, UserError, first_line
from dpflow.proofs import Check, manifest_digest, outcome_of
from dpflow.store.manifest import VersionManifest
from drivers.protocols import VmInfo
from flows.vm_image import plan_restore
from tasks.media import restore_disk, verify_restored_disk
from tasks.probes import check_probes, run_probes
from tasks.proofs import publish_proof, seal_proof, signing_key_id
from tasks.restore_test import (
    check_guest_files,
    check_isolation,
    create_test_vm,
    prepare_lab,
    scan_chunks,
    test_vm_name,
    wait_heartbeat,
)
from tasks.sessions import session
from tasks.vsphere import destroy_vm, power_on

LATER = ("disks", "isolation", "guest file systems", "heartbeat")


class ProofResult(BaseModel):
    vm: str
    status: Literal["passed", "failed"]
    proof_id: str
    version_id: str
    test_vm: str
    checks: list[Check]
    test_vm_removed: bool
    seconds: float
    message: str = ""


class RestoreTestFailed(DpflowError):
    """The restore test ran and its proof says failed (the proof is recorded)."""


def _skipped(names: tuple[str, ...], why: str) -> list[Check]:
    return [Check(name=n, status="skipped", detail=why) for n in names]


def _in_lab(env: Environment, vcenter: str, source: VmInfo, row: VersionRow,
            manifest: VersionManifest, test_vm: str, session_id: str) -> tuple[list[Check], bool]:
    """Restore, boot and check in the isolated lab; the test VM destroyed on every exit
    path. Returns the checks (the cleanup's last) and whether the test VM is gone."""
    checks: list[Check] = []
    host = prepare_lab(env, vcenter)
    vm = create_test_vm(env, vcenter, source, test_vm, session_id, host)
    removed = False
    try:
        _check_in_lab(env, vcenter, vm, host, row, manifest, checks)
    finally:
        try:
            destroy_vm(env, vcenter, vm)  # compensation of create_test_vm, on every path
            removed = True
            checks.append(Check(name="cleanup", status="passed",
                                detail=f"test VM {test_vm} powered off and destroyed"))
        except Exception as exc:  # noqa: BLE001 - reported in the proof, and loudly
            get_run_logger().error("TEST VM LEFT BEHIND: %s could not be destroyed: %s "
                                   "(the next restore test reaps it)", test_vm, first_line(exc))
            checks.append(Check(name="cleanup", status="failed",
                                detail=f"test VM {test_vm} not destroyed: {first_line(exc)}"))
    return checks, removed


def _check_in_lab(env: Environment, vcenter: str, vm: VmInfo, host: str, row: VersionRow,
                  manifest: VersionManifest, checks: list[Check]) -> None:
    """The checks on the test VM, appended as they are made (a later one is skipped when
    what it needs failed)."""
    try:
        for src, dst in zip(manifest.disks, vm.disks, strict=True):
            restore_disk(env, vcenter, row.store, src, dst, vm.name)
            verify_restored_disk(env, vcenter, row.store, src, dst)
        checks.append(Check(name="disks", status="passed", detail=(
            f"{len(vm.disks)} disk(s), {sum(d.capacity_bytes for d in manifest.disks):,} "
            f"bytes written and read back: every chunk matches the manifest")))
    except DpflowError as exc:
        checks.append(Check(name="disks", status="failed", detail=first_line(exc)))
        checks += _skipped(LATER[1:], "the disks were not restored")
        return
    checks.append(check_isolation(env, vcenter, vm, host))
    if checks[-1].status == "failed":  # never boot a VM that could reach production
        checks += _skipped(LATER[2:], "not isolated: not booted")
        return
    checks += check_guest_files(env, vcenter, row.object.name, vm.disks)
    try:
        power_on(env, vcenter, vm)
        checks.append(wait_heartbeat(env, vcenter, vm))
    except DpflowError as exc:
        checks.append(Check(name="heartbeat", status="failed",
                            detail=f"power on: {first_line(exc)}"))
    if checks[-1].status == "passed":
        checks += run_probes(env, vcenter, vm, row.object.name)


def plan_test(env: Environment, vm: str, version: str | None
              ) -> tuple[VersionRow, VersionManifest]:
    """Everything a user can get wrong, checked before any hardware is touched: the signing
    key, the version, the VM's probes. UserError (one line) if anything is."""
    signing_key_id(env)
    if not env.dc.vcenters:
        raise UserError("the config defines no vCenter to boot a restore test on")
    row, manifest = plan_restore(env, vm, version)
    check_probes(env, vm)
    return row, manifest


@flow(name="verify-restore", log_prints=True)
def verify_restore(dc: str, vm: str, version: str | None = None) -> ProofResult:
    """Restore test of one VM: its version booted in an isolated lab and checked; a signed
    proof of the outcome.

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        vm: the VM whose version to test
        version: a version id; empty: the latest
    """
    t0 = time.perf_counter()
    with open_environment(dc) as env:
        row, manifest = plan_test(env, vm, version)
        source = VmInfo.model_validate(manifest.vm)
        vcenter = env.dc.vcenters[0].name
        started = datetime.now(UTC)
        with session(env, "test-restore", vm) as s:
            name = test_vm_name(vm, s.id)
            checks = [scan_chunks(env, row.store, manifest)]
            removed = True
            if checks[0].status == "failed":
                checks += _skipped(LATER, "damaged chunks: the version was not restored")
            else:
                try:
                    more, removed = _in_lab(env, vcenter, source, row, manifest, name, s.id)
                    checks += more
                except DpflowError as exc:  # the lab itself failed: still a proof
                    checks.append(Check(name="lab", status="failed", detail=first_line(exc)))
                    removed = not env.hypervisor(vcenter).vm_exists(name)
            body = seal_proof(env, dict(
                proof_id=s.id, vm=vm, version_id=row.id, version_created=row.created,
                store=row.store, manifest_sha256=manifest_digest(manifest), test_vm=name,
                network=env.dc.restore_tests.network, started=started,
                ended=datetime.now(UTC), outcome=outcome_of(checks), checks=checks))
            publish_proof(body)
            s.status = "completed" if body.outcome == "passed" else "failed"
            s.message = f"proof {body.proof_id}: {body.outcome}" + (
                f" ({body.first_failure()})" if body.first_failure() else "")
        result = ProofResult(vm=vm, status=body.outcome, proof_id=body.proof_id,
                             version_id=row.id, test_vm=name, checks=checks,
                             test_vm_removed=removed, seconds=time.perf_counter() - t0,
                             message=body.first_failure())
        if body.outcome == "failed":
            raise RestoreTestFailed(f"restore test of {vm} version {row.id} failed: "
                                    f"{body.first_failure()} (proof {body.proof_id})")
        return result


@flow(name="verify-restores", log_prints=True)
def verify_restores(vms: list[str], dc: str = "default") -> list[dict]:
    """Restore tests of several VMs, one after the other, at most restore_tests.max_vms
    per run (the rest is refused up front, not silently dropped).

    Args:
        vms: the VMs to test (their latest versions)
        dc: the registered data centre (`dpflow dc list`)
    """
    from dpflow.environment import environment

    limit = environment(dc).dc.restore_tests.max_vms
    if len(vms) > limit:
        raise UserError(f"{len(vms)} VMs asked, restore_tests.max_vms is {limit}: split the "
                        f"list or raise the limit")
    out = []
    for name in vms:
        state = verify_restore(dc, name, return_state=True)
        if state.is_completed():
            out.append(state.result().model_dump(mode="json"))
        else:
            out.append({"vm": name, "status": "failed", "message": str(state.message or "")})
    return out

"""The night's image backups: many VMs at once, within the data centre's limits.

Each VM is one `backup-vm-image` subflow, started from a thread of Prefect's thread-pool
task runner (a small task per VM: Prefect runs tasks concurrently, not subflows). A VM
whose vCenter names a work pool (`work_pool:`, one per site) is sent to that pool's
deployment and followed there (flows.dispatch: a dead worker's VMs go to another pool).
Otherwise the VM first takes one slot of its proxy's, datastore's and ESX host's global
concurrency limit (dpflow.limits): the limits live on the Prefect server, so they also
bound the backups other workers run. Per-VM exclusivity and skip-not-fail stay inside
the VM's flow. One VM failing never stops the others; the run ends with a table artifact
(key `dpflow-backup-report`), one row per VM, and returns every VM's result.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from dpflow.environment import open_environment
from dpflow.errors import first_line
from dpflow.limits import backup_slot
from dpflow.pools import pool_of
from flows.dispatch import back_up_on_pools
from flows.vm_image import BackupResult, backup_vm_image

THREADS = 16  # an upper bound per process; the proxy's limit decides how many run


@task(name="back up VM", task_run_name="back up {vm}", retries=0)
def back_up_one(dc: str, vm: str, store: str | None, attempt: int,
                wait_s: float) -> BackupResult:
    """Send the VM to its site's work pool, or wait for a slot of its limits and run its
    flow here; a failure becomes a row."""
    try:
        with open_environment(dc) as env:
            vcenter, info = env.locate_vm(vm)
            pool = pool_of(env.dc, vcenter)
            if pool:  # its site's workers back it up (their proxy's limits)
                return back_up_on_pools(env, dc, vm, store, attempt, pool, wait_s)
            with backup_slot(env.dc, info.datastore, info.host):
                state = backup_vm_image(dc, vm, store, attempt=attempt, return_state=True)
    except Exception as exc:  # noqa: BLE001 - unknown VM, limits: reported for this VM
        return BackupResult(vm=vm, status="failed", session_id="", message=first_line(exc))
    try:
        result: BackupResult = state.result()
        return result
    except Exception as exc:  # noqa: BLE001 - the VM's flow failed: reported per VM
        return BackupResult(vm=vm, status="failed", session_id="", message=first_line(exc))


@flow(name="backup-vms", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=THREADS))  # type: ignore[arg-type]
def backup_vms(dc: str, vms: list[str], store: str | None = None,
               attempt: int = 1, wait_hours: float = 6.0) -> list[BackupResult]:
    """Image backups of several VMs at once; a failed VM does not stop the others.

    Args:
        dc: the registered data centre (`dpflow dc list`), or a data-centre file
        vms: the VMs to back up
        store: the store to write to (default: the data centre's first)
        attempt: 1 for a planned run; automations that run a VM again pass 2
        wait_hours: how long a VM sent to a work pool may take before it is cancelled
    """
    with open_environment(dc):  # one vCenter login, store and catalog for every VM
        futures = [back_up_one.submit(dc, vm, store, attempt, wait_hours * 3600)
                   for vm in vms]
        results = [f.result() for f in futures]
    create_table_artifact(
        key="dpflow-backup-report", description=f"image backups of {len(vms)} VM(s)",
        table=[{"vm": r.vm, "status": r.status, "version": r.version_id or "",
                "read MB": round(r.bytes_read / 1e6, 1), "added MB": round(r.bytes_added / 1e6, 1),
                "seconds": round(r.seconds, 1), "message": r.message} for r in results])
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"{len(failed)} of {len(results)} VM(s) failed: "
              + "; ".join(f"{r.vm}: {r.message}" for r in failed))
    return results

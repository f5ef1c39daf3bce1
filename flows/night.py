"""The night's image backups: many VMs at once, within the data centre's limits.

Each VM is one task run ("back up <vm>", its steps nested under it) on a thread of
Prefect's thread-pool task runner, running the same path as the `backup-vm-image` flow
without a flow run of its own: a flow run per VM cost more than a small incremental
(measured: bench/bench_night.py). A VM whose vCenter names a work pool (`work_pool:`, one
per site) is sent to that pool's deployment and followed there (flows.dispatch: a dead
worker's VMs go to another pool). Otherwise the VM takes one slot of its proxy's,
datastore's and ESX host's global concurrency limit with its own lock (dpflow.limits):
the limits live on the Prefect server, so they also bound the backups other workers run.
One VM failing never stops the others; the run ends with a table artifact (key
`dpflow-backup-report`), one row per VM, and returns every VM's result.
"""

from __future__ import annotations

from typing import cast

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from dpflow.environment import open_environment
from dpflow.errors import first_line
from dpflow.pools import pool_of
from flows.dispatch import back_up_on_pools
from flows.outcomes import ended
from flows.vm_image import BackupResult, back_up_vm

THREADS = 16  # an upper bound per process; the proxy's limit decides how many run


@task(name="back up VM", task_run_name="back up {vm}", retries=0)
def back_up_one(dc: str, vm: str, store: str | None, attempt: int,
                wait_s: float) -> BackupResult:
    """Send the VM to its site's work pool, or run its backup here (it waits for a slot
    of its limits first). The task run ends as the VM did (Completed, "Skipped" or
    Failed) and carries its row of the report either way."""
    try:
        with open_environment(dc) as env:
            vcenter, _ = env.locate_vm(vm)
            pool = pool_of(env.dc, vcenter)
            if pool:  # its site's workers back it up (their proxy's limits)
                result = back_up_on_pools(env, dc, vm, store, attempt, pool, wait_s)
            else:
                result = back_up_vm(dc, vm, store)
    except Exception as exc:  # noqa: BLE001 - unknown VM, limits, the path: per VM
        result = BackupResult(vm=vm, status="failed", session_id="", message=first_line(exc))
    if result.status == "failed":
        return cast(BackupResult, Failed(message=result.message, data=result))
    return ended(result, result.status, result.message)


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
        results: list[BackupResult] = [f.result(raise_on_failure=False) for f in futures]
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

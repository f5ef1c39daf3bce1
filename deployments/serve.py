"""The data centre's deployments: every dpflow path as a Prefect deployment, served by
one process (or run by workers of a process pool: deployments/prefect.yaml).

    uv run python deployments/serve.py --dc default --vms web01 db01

Scheduled: the nightly image backup (CBT incrementals after the first), a nightly Zero
Downtime Backup of each configured Oracle database, a weekly verify reading 10 % of the
chunks, a weekly forget + prune. On demand, from the UI or `run_deployment`: single-VM
image and file backups, an Oracle ZDB, site failover / test failover / failback (a dry
run unless unticked), and the restores (VM, files, files out of an image, LUNs, Oracle
Instant Recovery and from media), whose restore point the run asks for when it starts.
Chained by dpflow events (automations created with the deployments): a VM whose nightly
backup failed is backed up again an hour later (once), and a VM a verify found damaged
gets a new full backup. Weekly, a restore test of the nightly VMs (their latest versions
booted in the isolated lab, signed proofs); and a restore test after every completed
backup run tagged `dpflow-restore-test`. Per-site deployments for process workers:
deployments/pools.py.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from dpflow.retention import KeepPolicy

RETRY_AFTER = timedelta(hours=1)


def retry_trigger(after: timedelta = RETRY_AFTER) -> Any:
    """dpflow.backup.failed of a planned run (attempt 1) → back that VM up again, once."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="dpflow: back up a failed VM again", expect={"dpflow.backup.failed"},
        match={"dpflow.kind": "vm", "dpflow.attempt": "1"}, schedule_after=after,
        parameters={"vm": "{{ event.resource.name }}", "attempt": 2})


def damage_trigger() -> Any:
    """dpflow.verify.damage for a VM → a new full backup of it (no reuse of its chunks)."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="dpflow: full backup of a VM with damaged versions",
        expect={"dpflow.verify.damage"}, match={"dpflow.kind": "vm"},
        parameters={"vm": "{{ event.resource.name }}", "full": True})


PROOF_TAG = "dpflow-restore-test"


def proof_trigger() -> Any:
    """dpflow.backup.completed of a backup run tagged dpflow-restore-test → a restore test
    of that VM's new version."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="dpflow: restore test after a tagged backup", expect={"dpflow.backup.completed"},
        match={"dpflow.kind": "vm"},
        match_related={"prefect.resource.id": f"prefect.tag.{PROOF_TAG}"},
        parameters={"vm": "{{ event.resource.name }}"})


def build(dc: str, vms: list[str], *, backup_cron: str = "0 1 * * *",
          verify_cron: str = "0 6 * * 0", prune_cron: str = "0 7 * * 0",
          proof_cron: str = "0 9 * * 6",
          zdb_cron: str = "0 23 * * *",
          retry_after: timedelta = RETRY_AFTER) -> list[Any]:
    """The deployments, validated but not yet served (tests build them too)."""
    from dpflow import datacentre
    from flows.maintenance import forget_versions, prune_media, verify_media
    from flows.night import backup_vms
    from flows.operate_dr import (
        oracle_instant_recovery,
        oracle_restore_from_media,
        oracle_zdb,
        site_failover,
    )
    from flows.restore_test import verify_restore, verify_restores
    from flows.restores import restore_files, restore_image_files, restore_luns, restore_vm
    from flows.vm_files import backup_vm_files
    from flows.vm_image import backup_vm_image

    model = datacentre.load(dc)  # an unknown data centre or a bad file stops here, one line
    keep = KeepPolicy(daily=7, weekly=4, monthly=12)
    on = {"dc": dc}
    return [
        backup_vms.to_deployment("nightly-image-backup", cron=backup_cron,
                                 parameters={**on, "vms": vms}),
        backup_vm_image.to_deployment("vm-image-backup", parameters=on,
                                      triggers=[retry_trigger(retry_after)]),
        backup_vm_image.to_deployment("full-backup-after-damage", parameters=on,
                                      triggers=[damage_trigger()]),
        backup_vm_files.to_deployment("vm-file-backup", parameters=on),
        verify_media.to_deployment("weekly-verify", cron=verify_cron,
                                   parameters={**on, "read_percent": 10.0}),
        forget_versions.to_deployment("weekly-forget", cron=prune_cron,
                                      parameters={**on, "policy": keep.model_dump(),
                                                  "apply": True}),
        prune_media.to_deployment("weekly-prune", cron=prune_cron,
                                  parameters={**on, "apply": True}),
        restore_vm.to_deployment("restore-vm", parameters=on),
        restore_files.to_deployment("restore-files", parameters=on),
        restore_image_files.to_deployment("restore-files-from-image", parameters=on),
        restore_luns.to_deployment("restore-luns", parameters=on),
        verify_restores.to_deployment("weekly-restore-test", cron=proof_cron,
                                      parameters={**on, "vms": vms}),
        verify_restore.to_deployment("restore-test", parameters=on,
                                     triggers=[proof_trigger()]),
        oracle_zdb.to_deployment("oracle-zdb", parameters=on),
        oracle_instant_recovery.to_deployment("oracle-instant-recovery", parameters=on),
        oracle_restore_from_media.to_deployment("oracle-restore-from-media", parameters=on),
        site_failover.to_deployment("site-failover", parameters=on),
    ] + [oracle_zdb.to_deployment(f"nightly-oracle-zdb-{d.name.lower()}", cron=zdb_cron,
                                  parameters={**on, "db": d.name}) for d in model.databases]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dc", default="default",
                    help="registered data-centre name (or a data-centre file)")
    ap.add_argument("--vms", nargs="+", required=True, help="VMs of the nightly backup")
    ap.add_argument("--backup-cron", default="0 1 * * *")
    ap.add_argument("--retry-after-s", type=float, default=RETRY_AFTER.total_seconds())
    args = ap.parse_args()
    from prefect import serve

    from dpflow import prefect_server

    prefect_server.ensure_server()
    serve(*build(args.dc, args.vms, backup_cron=args.backup_cron,
                 retry_after=timedelta(seconds=args.retry_after_s)))


if __name__ == "__main__":
    main()

"""The deployments as an administrator serves them (deployments/serve.py in its own
process, the data centre registered as a Prefect block): the nightly schedule fires by
itself and its run completes; dpflow events start the chained runs of the automations
the deployment step created."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpflow import datacentre
from dpflow.environment import environment
from simulators.guest_disks import MiB
from tests.integration.served import (
    Served,
    child_env,
    events,
    poll,
    runs_of,
    unique,
    write_dc,
)

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def lab_env(vcsim) -> dict[str, str]:
    """The served process's environment, with the restore tests' proof key and guest
    password."""
    from tests.integration.test_restore_proofs import KEY

    return dict(child_env(vcsim), DPFLOW_TEST_PROOF_KEY=KEY,
                DPFLOW_TEST_GUEST_PASSWORD=vcsim.guest_password)


@pytest.fixture(scope="module")
def site(vcsim, prefect_server, tmp_path_factory):
    """A registered data centre, one VM, and its deployments served (nightly: every minute)."""
    tmp = tmp_path_factory.mktemp("served")
    name = unique("dc")
    datacentre.register(write_dc(tmp / "dc.yaml", vcsim, restore_tests={
        "proof_key": {"env": "DPFLOW_TEST_PROOF_KEY"},
        "guest_password": {"env": "DPFLOW_TEST_GUEST_PASSWORD"}}), name)
    vm = unique("nightly")
    vcsim.create_vm(vm, [4 * MiB])
    vcsim.seed_disk(vm, 0, bytes(range(256)) * (4 * MiB // 256))
    served = Served(["--dc", name, "--vms", vm, "--backup-cron", "* * * * *",
                     "--retry-after-s", "0"], lab_env(vcsim), tmp / "serve.log")
    try:
        deps = {d: served.wait_deployment(d, name) for d in (
            "backup-vms/nightly-image-backup", "backup-vm-image/vm-image-backup",
            "backup-vm-image/full-backup-after-damage", "verify-restore/restore-test")}
        yield {"dc": name, "vm": vm, "deps": deps, "served": served}
    finally:
        served.stop()


def _completed(dep, **params):
    def done():
        runs = [r for r in runs_of(dep.id)
                if all(r.parameters.get(k) == v for k, v in params.items())]
        failed = [r for r in runs if r.state and r.state.is_final() and
                  not r.state.is_completed()]
        assert not failed, f"run {failed[0].name} ended {failed[0].state.name}"
        return next((r for r in runs if r.state and r.state.is_completed()), None)
    return done


def test_nightly_schedule_fires_and_its_run_completes(site):
    dep = site["deps"]["backup-vms/nightly-image-backup"]
    run = poll(_completed(dep), 200, site["served"].alive, every_s=2)
    assert run.auto_scheduled  # made by the server's scheduler from the cron, not by us
    assert run.parameters == {"dc": site["dc"], "vms": [site["vm"]]}
    versions = environment(site["dc"]).catalog().versions(site["vm"])
    assert versions, "the scheduled run catalogued no version"
    poll(lambda: events("dpflow.backup.completed", f"dpflow.vm.{site['vm']}"), 60)


def test_failed_backup_event_starts_a_retry_of_that_vm(site):
    from dpflow.events import emit

    vm = site["vm"]
    emit("dpflow.backup.failed", "vm", vm, message="test: the nightly backup failed")
    dep = site["deps"]["backup-vm-image/vm-image-backup"]
    run = poll(_completed(dep, vm=vm), 180, site["served"].alive, every_s=2)
    assert run.parameters["attempt"] == 2 and run.parameters["dc"] == site["dc"]
    # the retry's own outcome is an attempt-2 event: it starts nothing further
    poll(lambda: any(e["resource"]["dpflow.attempt"] == "2"
                     for e in events("dpflow.backup.completed", f"dpflow.vm.{vm}")), 60)


def test_verify_damage_event_starts_a_full_backup(site):
    from dpflow.events import emit

    vm = site["vm"]
    emit("dpflow.verify.damage", "vm", vm, message="test: 3 chunks damaged")
    dep = site["deps"]["backup-vm-image/full-backup-after-damage"]
    run = poll(_completed(dep, vm=vm), 180, site["served"].alive, every_s=2)
    assert run.parameters["full"] is True
    cat = environment(site["dc"]).catalog()
    made = [v for v in cat.versions(vm) if cat.get_session(v.session_id).flow_run_id == str(run.id)]
    assert len(made) == 1 and "full" in made[0].note.split("; ")  # not a CBT incremental


def test_a_tagged_backup_starts_a_restore_test_that_proves_its_version(site, vcsim, tmp_path,
                                                                       monkeypatch):
    """A backup run tagged dpflow-restore-test ends with dpflow.backup.completed; the
    automation of the restore-test deployment starts a restore test of that VM, whose
    passed proof of the new version lands in the catalog."""
    from prefect import tags

    from deployments.serve import PROOF_TAG
    from dpflow.catalog_proofs import proofs
    from flows.vm_image import backup_vm_image
    from simulators.guest_disks import make_guest_disk

    for k, v in lab_env(vcsim).items():
        if k.startswith("DPFLOW_TEST_"):
            monkeypatch.setenv(k, v)
    vm = unique("proved")
    vcsim.create_vm(vm, [12 * MiB])
    make_guest_disk(tmp_path / "disk.img", 12 * MiB, seed=5)
    vcsim.seed_disk(vm, 0, tmp_path / "disk.img")
    with tags(PROOF_TAG):
        b = backup_vm_image(site["dc"], vm)
    poll(lambda: any(e["event"] == "dpflow.backup.completed" and any(
        r["prefect.resource.id"] == f"prefect.tag.{PROOF_TAG}" for r in e["related"])
        for e in events("dpflow.backup.completed", f"dpflow.vm.{vm}")), 60)
    dep = site["deps"]["verify-restore/restore-test"]
    run = poll(_completed(dep, vm=vm), 180, site["served"].alive, every_s=2)
    assert run.parameters == {"dc": site["dc"], "vm": vm}
    (proof,) = proofs(environment(site["dc"]).catalog(), vm)
    assert proof.outcome == "passed" and proof.version_id == b.version_id


def test_unknown_data_centre_is_refused_at_deploy_time(tmp_path: Path):
    from deployments.serve import build
    from dpflow.errors import UserError

    with pytest.raises(UserError, match="unknown data centre 'nowhere'"):
        build("nowhere", ["web01"])

"""A VM sent to a work pool that has no live worker does not wait out `wait_hours`: its
waiting run is cancelled once Prefect reports the pool without one, and (no other pool
left) the VM fails with one line that names the pool and how to fix it."""

from __future__ import annotations

import os

import pytest
import yaml

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_backup_queued_in_a_pool_without_live_worker_fails_fast_not_after_wait_hours(
        vcsim, dc_config, monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from deployments.pools import deploy_pools
    from dpflow.pools import deployment_name
    from flows import dispatch
    from flows.night import backup_vms

    pool = f"dead pool {os.getpid()}"
    conf = yaml.safe_load(dc_config.read_text())
    conf["vcenters"][0]["work_pool"] = pool
    dc_config.write_text(yaml.safe_dump(conf))
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))  # no worker, ever
        assert client.read_work_pool(pool).status.value == "NOT_READY"
    deploy_pools(str(dc_config))
    vcsim.create_vm(vm := f"dead-{os.getpid()}", [1 << 20])
    monkeypatch.setattr(dispatch, "OWNER_CHECK_S", 0.5)
    monkeypatch.setattr(dispatch, "DOWN_GRACE_S", 0.0)  # Prefect's status is the only signal

    (r,) = backup_vms(str(dc_config), [vm], wait_hours=6.0)
    assert r.status == "failed" and "\n" not in r.message
    assert r.message.startswith(f"work pool '{pool}' has no live worker (Prefect: NOT_READY); "
                                f"start one: prefect worker start --pool '{pool}'; its run ")
    assert "cancelled before any worker took it" in r.message
    assert vcsim.snapshot_count(vm) == 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=[deployment_name(pool)])))
    assert [run.state.type.value for run in runs] == ["CANCELLED"]  # nothing left queued

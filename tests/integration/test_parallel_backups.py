"""backup_vms runs VMs at once within the data centre's limits: a failing VM and a VM
skipped for space do not stop the others, and the run's table artifact says what
happened to each."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from dpflow.environment import environment
from simulators.guest_disks import MiB
from tests.integration.served import events, unique

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def _no_faults(vcsim):
    vcsim.clear_faults()
    yield
    vcsim.clear_faults()
    vcsim.set_datastore_free(None)


def max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The most sessions that were open at one instant."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                   key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


def test_parallel_backups_within_limits(vcsim, dc_config):
    from prefect.client.orchestration import get_client

    from flows.night import backup_vms

    conf = yaml.safe_load(dc_config.read_text())
    conf["limits"] = {"per_proxy": 3, "per_datastore": 2, "per_host": 8}
    dc_config.write_text(yaml.safe_dump(conf))
    good = [unique("par") for _ in range(4)]
    bad, big = unique("par-bad"), unique("par-big")
    for vm in good + [bad]:
        vcsim.create_vm(vm, [6 * MiB])
        vcsim.seed_disk(vm, 0, bytes([len(vm)]) * (6 * MiB))
    vcsim.create_vm(big, [512 * MiB])  # its snapshot delta needs 51 MiB: skipped
    vcsim.set_datastore_free(32 * MiB)
    vcsim.set_fault(path=rf"/{bad}/.*-flat\.vmdk$", kind="http", status=404, count=0)

    results = backup_vms(str(dc_config), good + [bad, big])

    status = {r.vm: r.status for r in results}
    assert status == {**dict.fromkeys(good, "completed"), bad: "failed", big: "skipped"}
    assert "disk file not found" in next(r.message for r in results if r.vm == bad)
    cat = environment(dc_config).catalog()
    assert all(cat.versions(vm) for vm in good) and not cat.versions(bad)
    assert vcsim.snapshot_count(bad) == 0  # the failed VM left no snapshot
    # never more sessions at once than the datastore's limit (whether two did overlap
    # depends on the machine's speed, so it is not asserted)
    spans = [(s.started, s.ended) for vm in good
             for s in [cat.get_session(next(r.session_id for r in results if r.vm == vm))]]
    assert 1 <= max_overlap(spans) <= 2
    # one event per VM, saying how it ended
    assert events("dpflow.backup.failed", f"dpflow.vm.{bad}")
    assert events("dpflow.backup.skipped", f"dpflow.vm.{big}")
    # the run's report: a table artifact with one row per VM
    with get_client(sync_client=True) as c:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        arts = c.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["dpflow-backup-report"])))
    rows = [row for a in arts if a.type == "table" for row in _rows(a.data)]
    assert {(row["vm"], row["status"]) for row in rows} >= {(bad, "failed"), (big, "skipped")}


def _rows(data) -> list[dict]:
    import json

    return json.loads(data) if isinstance(data, str) else data

"""Site failover, failback and test failover over two simulated EVA processes.

The bytes at site B are only what the inter-site link delivered; the flows drive the real
SMI-S driver over HTTPS. Each test uses its own DR group and vdisks on the shared sites.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows import site_failover as sf
from flows.dr_admin import dr_status, protect
from simulators.sites import TwoSites

MiB = 1 << 20
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSites]:
    with TwoSites.start(tmp_path_factory.mktemp("sites")) as s:
        yield s


@pytest.fixture
def sites_ok(sites: TwoSites) -> Iterator[TwoSites]:
    sites.link(up=True, bandwidth=None)
    yield sites
    sites.link(up=True, bandwidth=None)


def setup_group(s: TwoSites, tmp: Path, name: str, mode: str = "sync") -> tuple[str, list[int]]:
    """Two vdisks at A presented to esx-a, one DR group to B made by the protect flow."""
    from drivers.smis import SmisArray

    a = SmisArray(s.a.connection())
    vds = [f"{name}-v1", f"{name}-v2"]
    luns = []
    for v in vds:
        a.create_vdisk(v, 4 * MiB, "DG1")
        luns.append(a.present(v, "esx-a").lun)
    cfg = s.write_config(tmp / "dc.yaml", [{"name": name, "home": "A", "remote": "B",
                                            "vdisks": vds, "mode": mode,
                                            "in_sync_timeout_s": 60}])
    protect(str(cfg))
    return str(cfg), luns


def lun_at(s: TwoSites, site: str, vdisk: str) -> int:
    from drivers.smis import SmisArray

    d = SmisArray(s.arrays[site].connection())
    host = {"A": "esx-a", "B": "esx-b"}[site]
    return next(p.lun for p in d.list_presentations(vdisk) if p.host == host)


def wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_planned_failover_then_failback_after_the_guard(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    cfg, (l1, l2) = setup_group(s, tmp_path, "plan")
    data = bytes(range(256)) * 4096  # 1 MiB
    s.host("A").write(l1, 0, data)
    s.host("A").write(l2, MiB, data[::-1])
    dry = sf.failover_site(cfg, "B", planned=True, dry_run=True)
    assert dry.plan[0].startswith("plan: hide plan-v1, plan-v2 from esx-a on EVA-A")
    assert s.dr_info("A", "plan")["role"] == "source"  # the dry run touched nothing
    res = sf.failover_site(cfg, "B", planned=True)
    assert res.ok and res.groups[0].status == "done" and res.groups[0].writes_lost == 0
    assert s.dr_info("B", "plan")["role"] == "source"
    b1, b2 = lun_at(s, "B", "plan-v1"), lun_at(s, "B", "plan-v2")
    assert s.host("B").read(b1, 0, MiB) == data and s.host("B").read(b2, MiB, MiB) == data[::-1]
    with pytest.raises(OSError, match="no LUN"):  # fenced: site A's host lost its LUNs
        s.host("A").write(l1, 0, b"split brain")
    again = sf.failover_site(cfg, "B", planned=True)  # a re-run finds it done
    assert again.groups[0].status == "already done"
    s.host("B").write(b1, 2 * MiB, b"written at B")
    early = sf.failback_site(cfg, "A")
    assert early.groups[0].status == "failed"
    assert "15 minutes after a failover" in early.groups[0].message
    assert "left" in early.groups[0].message
    assert s.dr_info("B", "plan")["role"] == "source"  # nothing moved
    s.advance_clock(901)
    back = sf.failback_site(cfg, "A")
    assert back.ok and back.groups[0].status == "done", back.groups[0].message
    a1 = lun_at(s, "A", "plan-v1")
    assert s.host("A").read(a1, 2 * MiB, 12) == b"written at B"
    assert s.dr_info("A", "plan")["role"] == "source"


def test_unplanned_async_failover_loses_exactly_the_unsent_tail(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    cfg, (l1, _) = setup_group(s, tmp_path, "lost", mode="async")
    for i in range(2):
        s.host("A").write(l1, i * MiB, bytes([i + 1]) * MiB)
    wait(lambda: s.dr_info("A", "lost")["log_writes"] == 0, "async drain")
    s.link(up=False)  # site A cut off; its host keeps writing into the log
    for i in range(2, 4):
        s.host("A").write(l1, i * MiB, bytes([i + 1]) * MiB)
    res = sf.failover_site(cfg, "B", planned=False)
    g = res.groups[0]
    assert res.ok and g.status == "done", g.message
    assert g.writes_lost == 2 and g.writes_held == s.dr_info("A", "lost")["seq"] - 2
    b1 = lun_at(s, "B", "lost-v1")
    assert s.host("B").read(b1, 0, 2 * MiB) == bytes([1]) * MiB + bytes([2]) * MiB
    assert s.host("B").read(b1, 2 * MiB, 2 * MiB) == bytes(2 * MiB)  # the unsent tail
    s.host("B").write(b1, 3 * MiB, b"B")
    s.link(up=True)  # A returns: it learns it lost, and B's data overwrites its tail
    wait(lambda: s.dr_info("A", "lost")["role"] == "destination"
         and s.dr_info("A", "lost")["consistent"], "old source demoted and resynced")
    wait(lambda: s.dr_info("B", "lost")["pending_blocks"] == 0, "resync done")
    s.advance_clock(901)
    back = sf.failback_site(cfg, "A")
    assert back.ok, back.groups[0].message
    a1 = lun_at(s, "A", "lost-v1")
    assert s.host("A").read(a1, 2 * MiB, 1) == b"\0" and s.host("A").read(a1, 3 * MiB, 1) == b"B"


def test_failover_refused_while_suspended_and_test_failover_leaves_production(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    from drivers.smis import SmisArray

    s = sites_ok
    cfg, (l1, _) = setup_group(s, tmp_path, "tst")
    s.host("A").write(l1, 0, b"production")
    before = s.dr_info("B", "tst")
    res = sf.test_failover(cfg, "B")
    assert res.ok, res.groups[0].message
    after = s.dr_info("B", "tst")
    assert (after["role"], after["generation"], after["suspended"]) == (
        "destination", before["generation"], False)
    b = SmisArray(s.b.connection())
    assert not b.list_replica_sets() and not b.list_presentations("tst-v1")
    s.host("A").write(l1, 0, b"still flows")  # replication never stopped
    wait(lambda: s.dr_info("B", "tst")["seq"] == s.dr_info("A", "tst")["seq"], "replication")
    a = SmisArray(s.a.connection())
    a.suspend_dr_group("tst")
    wait(lambda: s.dr_info("B", "tst")["suspended"], "suspend reaches B")
    res = sf.failover_site(cfg, "B", planned=False)
    assert res.groups[0].status == "failed"
    assert "suspended: resume it before failing over" in res.groups[0].message
    assert s.dr_info("B", "tst")["role"] == "destination"
    a.resume_dr_group("tst")
    status = dr_status(cfg)
    assert [st.site for st in status] == ["A", "B"] and all(st.reachable for st in status)
    assert {g.name for g in status[0].groups} >= {"tst"}
    from typer.testing import CliRunner

    from dpflow_cli.main import app

    r = CliRunner().invoke(app, ["dr", "status", "-c", cfg], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.output.splitlines() if " tst " in ln]
    assert len(rows) == 2 and "source" in rows[0] and "destination" in rows[1]


def test_remote_zdb_replica_at_site_b_is_catalogued(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    """CA + BC: a replica set of the destination vdisks taken at site B, by the same
    replicate flow as a local one, and catalogued with array EVA-B."""
    from dpflow.environment import environment
    from flows.luns import replicate_luns

    s = sites_ok
    cfg, (l1, _) = setup_group(s, tmp_path, "rz", mode="async")
    s.host("A").write(l1, 0, b"replicated to B")
    wait(lambda: s.dr_info("B", "rz")["seq"] == s.dr_info("A", "rz")["seq"], "replication")
    r = replicate_luns(cfg, "rz-remote", ["rz-v1", "rz-v2"], "snapclone", keep=1,
                       policy="strict", array="EVA-B")
    assert r.status == "completed", r.message
    rows = environment(cfg).catalog().replica_sets("rz-remote")
    assert [(x.name, x.array) for x in rows] == [(r.replica_set, "EVA-B")]
    s.host("A").write(l1, 0, b"later at A....")  # replication goes on; the replica holds
    wait(lambda: s.dr_info("B", "rz")["seq"] == s.dr_info("A", "rz")["seq"], "replication")
    from drivers.smis import SmisArray

    b = SmisArray(s.b.connection())
    target = f"{r.replica_set}-rz-v1"
    lun = b.present(target, "esx-b", read_only=True).lun
    assert s.host("B").read(lun, 0, 15) == b"replicated to B"
    b.unpresent(target, "esx-b")
    assert s.dr_info("B", "rz")["role"] == "destination"


def test_site_b_array_failing_mid_failover_then_rerun_continues(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    s = sites_ok
    cfg, (l1, _) = setup_group(s, tmp_path, "crash")
    s.host("A").write(l1, 0, b"kept")
    s.b.faults.fail_method("ModifyReplicaSynchronization", rc=4,
                           description="controller B restarting", count=1)
    first = sf.failover_site(cfg, "B", planned=True)
    g = first.groups[0]
    assert g.status == "failed" and "controller B restarting" in g.message
    # the state it stopped in: A fenced (no LUNs at esx-a), B still the destination
    assert s.dr_info("B", "crash")["role"] == "destination"
    with pytest.raises(OSError, match="no LUN"):
        s.host("A").read(l1, 0, 4)
    again = sf.failover_site(cfg, "B", planned=True)
    assert again.ok and again.groups[0].status == "done", again.groups[0].message
    assert s.host("B").read(lun_at(s, "B", "crash-v1"), 0, 4) == b"kept"


def test_site_failover_deployment_fails_over_and_back_for_real(
        sites_ok: TwoSites, tmp_path: Path, prefect_server: None) -> None:
    """The `site-failover` deployment as the UI form starts it (dry run off): the
    group's LUNs at B hold A's bytes, then failback brings them home."""
    from tests.integration.served import run_like_a_deployment

    s = sites_ok
    cfg, (l1, _) = setup_group(s, tmp_path, "ui")
    s.host("A").write(l1, 0, b"from the UI form")
    form = {"site": "B", "action": "planned failover", "dry_run": False, "groups": "ui"}
    res = run_like_a_deployment(cfg, "site-failover", form)
    assert not res["dry_run"] and [g["status"] for g in res["groups"]] == ["done"], res
    assert s.dr_info("B", "ui")["role"] == "source"
    assert s.host("B").read(lun_at(s, "B", "ui-v1"), 0, 16) == b"from the UI form"
    s.advance_clock(901)
    back = run_like_a_deployment(cfg, "site-failover", {**form, "action": "failback",
                                                        "site": "A"})
    assert [g["status"] for g in back["groups"]] == ["done"], back
    assert s.dr_info("A", "ui")["role"] == "source"

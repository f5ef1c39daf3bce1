"""Site plans and their command line: computed from the data-centre file alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dpflow_cli.main import app

SITES = {
    "stores": [{"name": "library", "path": "store"}],
    "arrays": [{"name": n, "host": "127.0.0.1", "user": "admin",
                "password": {"env": "NOT_NEEDED_FOR_A_PLAN"}, "backup_host": "backup"}
               for n in ("EVA-A", "EVA-B")],
    "sites": [{"name": "A", "array": "EVA-A", "hosts": ["esx-a"]},
              {"name": "B", "array": "EVA-B", "hosts": ["esx-b1", "esx-b2"]}],
    "dr_groups": [{"name": "app", "home": "A", "remote": "B", "vdisks": ["vd1", "vd2"],
                   "mode": "async"},
                  {"name": "db", "home": "A", "remote": "B", "vdisks": ["db1"]}],
}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "dc.yaml"
    p.write_text(yaml.safe_dump(SITES))
    return p


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output  # stdout and stderr together


def test_failover_dry_run_prints_the_ordered_plan(cfg: Path) -> None:
    code, out = run("failover", "B", "--dry-run", "-c", str(cfg))
    assert code == 0, out
    lines = [ln.split(". ", 1)[1] for ln in out.strip().splitlines()]
    assert lines[:4] == [
        "app: hide vd1, vd2 from esx-a on EVA-A (stop host I/O at site A)",
        "app: wait until in sync on EVA-A (<= 300s)",
        "app: fail over on EVA-B",
        "app: present vd1, vd2 read/write to esx-b1, esx-b2 on EVA-B"]
    assert lines[4].startswith("db: hide db1") and len(lines) == 8


def test_unplanned_test_and_failback_plans(cfg: Path) -> None:
    code, out = run("failover", "B", "--unplanned", "--dry-run", "-g", "db", "-c", str(cfg))
    assert code == 0 and "db: read the writes EVA-B holds" in out and "app" not in out
    code, out = run("failover", "B", "--test", "--dry-run", "-c", str(cfg))
    assert code == 0 and "writable snapshot test-app of vd1, vd2 on EVA-B" in out
    code, out = run("failback", "A", "--dry-run", "-c", str(cfg))
    assert code == 0 and "refuse if failed over less than 15 minutes ago" in out


@pytest.mark.parametrize("args,words", [
    (["failover", "C"], "unknown site 'C'"),
    (["failover", "A"], "no DR group has site 'A' as its remote site"),
    (["failover", "B", "-g", "nope"], "unknown DR group(s) nope"),
    (["failover", "B", "--test", "--unplanned"], "exclude each other"),
])
def test_bad_input_is_one_line_and_exit_2(cfg: Path, args: list[str], words: str) -> None:
    code, out = run(*args, "--dry-run", "-c", str(cfg))
    assert code == 2 and words in out and len(out.strip().splitlines()) <= 2


def test_config_refuses_a_dr_group_on_an_unknown_site(cfg: Path) -> None:
    bad = dict(SITES, dr_groups=[{"name": "x", "home": "A", "remote": "Z", "vdisks": ["v"]}])
    cfg.write_text(yaml.safe_dump(bad))
    code, out = run("failover", "B", "--dry-run", "-c", str(cfg))
    assert code == 2 and "DR group 'x': unknown remote site 'Z'" in out


def vm_sites() -> dict:
    """The same sites with vCenters, a network map at B and two VMs on app's datastore."""
    dc = yaml.safe_load(yaml.safe_dump(SITES))
    dc["vcenters"] = [{"name": f"vc-{s}", "host": "127.0.0.1", "user": "u",
                       "password": {"env": "NOT_NEEDED_FOR_A_PLAN"}} for s in "AB"]
    dc["sites"][0]["vcenter"], dc["sites"][1]["vcenter"] = "vc-A", "vc-B"
    dc["sites"][1]["networks"] = {"VM Network": "DR Network"}
    dc["dr_groups"][0].update(datastore="DS-app", vms=[{"name": "db01", "priority": 1},
                                                       {"name": "web01", "priority": 2}])
    return dc


def test_failover_plan_takes_vms_down_at_a_and_up_at_b_by_priority(tmp_path: Path) -> None:
    p = tmp_path / "dc.yaml"
    p.write_text(yaml.safe_dump(vm_sites()))
    r = CliRunner().invoke(app, ["failover", "B", "--dry-run", "-c", str(p), "-g", "app"],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    lines = [ln.split(". ", 1)[1] for ln in r.output.splitlines()]
    assert lines[0].startswith("app: power off db01, web01 at site A (vc-A; the host writes "
                               "DS-app back to its LUN)")
    assert lines[-3:] == [
        "app: rescan vc-B, mount VMFS volume DS-app by resignature",
        "app: priority 1: register db01 from their .vmx, re-map networks (VM Network → DR "
        "Network), power on, wait until up and probed",
        "app: priority 2: register web01 from their .vmx, re-map networks (VM Network → DR "
        "Network), power on, wait until up and probed"]


def test_vms_need_a_datastore_and_vcenters_at_both_sites(tmp_path: Path) -> None:
    dc = vm_sites()
    del dc["dr_groups"][0]["datastore"]
    p = tmp_path / "dc.yaml"
    p.write_text(yaml.safe_dump(dc))
    r = CliRunner().invoke(app, ["failover", "B", "--dry-run", "-c", str(p)])
    assert r.exit_code == 2 and "'vms' need the 'datastore' that holds them" in r.output


def test_failover_report_lists_each_vm_and_exits_1_when_one_failed(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from dpflow_cli.app import console
    from dpflow_cli.dr import _report

    monkeypatch.setattr(console, "width", 200)
    from flows.site_failover import GroupOutcome, SiteResult
    from flows.site_vms import VmOutcome

    res = SiteResult(action="planned failover", site="B", dry_run=False, plan=[],
                     groups=[GroupOutcome(group="app", status="done")],
                     vms=[VmOutcome(vm="db01", group="app", priority=1, status="up",
                                    networks=["DR Network"], up_at_s=3.2),
                          VmOutcome(vm="web01", group="app", priority=2, status="failed",
                                    message="not enough memory")])
    with pytest.raises(typer.Exit) as e:
        _report(res)
    assert e.value.exit_code == 1
    out = capsys.readouterr().out
    assert "db01" in out and "DR Network" in out and "3.2s" in out
    assert "web01" in out and "not enough memory" in out


def test_restore_to_another_site_with_a_bad_network_mapping_is_one_line(cfg: Path) -> None:
    r = CliRunner().invoke(app, ["restore", "vm", "db01", "--vcenter", "vc-B", "--network",
                                 "VM Network", "-c", str(cfg)], env={"COLUMNS": "200"})
    assert r.exit_code == 2
    assert "--network 'VM Network': write it OLD=NEW" in r.output

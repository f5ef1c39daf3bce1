"""The deployments build from a data-centre file, refuse a bad one, and the prefect.yaml
twin names real flows with parameters and triggers they accept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from deployments.serve import build
from dpflow.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
vcenters:
  - {name: vc1, host: 127.0.0.1, user: u, password: {env: X}}
stores:
  - {name: lib, path: store}
"""


def test_build_deployments(tmp_path: Path) -> None:
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(GOOD)
    deps = {d.name: d for d in build(str(cfg), ["web01"])}
    assert {"nightly-image-backup", "vm-image-backup", "full-backup-after-damage",
            "vm-file-backup", "weekly-verify", "weekly-forget", "weekly-prune", "restore-vm",
            "restore-files", "restore-files-from-image", "restore-luns", "weekly-restore-test",
            "restore-test"} <= set(deps)
    assert deps["nightly-image-backup"].parameters == {"dc": str(cfg), "vms": ["web01"]}
    assert all(d.parameters["dc"] == str(cfg) for d in deps.values())
    assert deps["nightly-image-backup"].schedules and deps["weekly-verify"].schedules
    retry = deps["vm-image-backup"].triggers[0]
    assert retry.expect == {"dpflow.backup.failed"}
    assert retry.parameters == {"vm": "{{ event.resource.name }}", "attempt": 2}
    assert deps["weekly-restore-test"].schedules
    assert deps["weekly-restore-test"].parameters == {"dc": str(cfg), "vms": ["web01"]}
    proof = deps["restore-test"].triggers[0]
    assert proof.expect == {"dpflow.backup.completed"}


def test_bad_config_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(GOOD + "nightly: yes\n")
    with pytest.raises(UserError, match="unknown key"):
        build(str(cfg), ["web01"])


@pytest.mark.parametrize("dep", yaml.safe_load((ROOT / "deployments" / "prefect.yaml")
                                               .read_text())["deployments"],
                         ids=lambda d: d["name"])
def test_prefect_yaml_names_real_flows_and_parameters(dep: dict) -> None:
    from prefect.events import DeploymentEventTrigger

    path, name = dep["entrypoint"].split(":")
    fn = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    accepted = set(inspect.signature(fn.fn).parameters)
    assert set(dep.get("parameters", {})) <= accepted
    for t in dep.get("triggers", []):
        trigger = DeploymentEventTrigger(**t)
        assert set(trigger.parameters or {}) <= accepted


DR = """
stores:
  - {name: lib, path: store}
arrays:
  - {name: EVA-A, host: 127.0.0.1, user: a, password: {env: X}, backup_host: b}
  - {name: EVA-B, host: 127.0.0.1, user: a, password: {env: X}, backup_host: b}
databases:
  - {name: ORCL, dsn: "db:1521/ORCL", password: {env: X}}
sites:
  - {name: A, array: EVA-A, hosts: [esx-a]}
  - {name: B, array: EVA-B, hosts: [esx-b]}
dr_groups:
  - {name: app, home: A, remote: B, vdisks: [vd1]}
  - {name: db, home: A, remote: B, vdisks: [db1]}
"""


def _flat(schema: dict) -> list[str]:
    """Parameters the UI would render as a union, a nullable field or a sub-form."""
    return [name for name, p in schema.get("properties", {}).items()
            if "anyOf" in p or "allOf" in p or "$ref" in p or p.get("type") == "object"]


def test_oracle_and_failover_deployments_have_flat_parameters(tmp_path: Path) -> None:
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(DR)
    deps = {d.name: d for d in build(str(cfg), ["web01"])}
    new = ["oracle-zdb", "oracle-instant-recovery", "oracle-restore-from-media",
           "site-failover"]
    for name in new:
        assert _flat(deps[name]._parameter_openapi_schema.model_dump()) == [], name
    nightly = deps["nightly-oracle-zdb-orcl"]
    assert nightly.parameters == {"dc": str(cfg), "db": "ORCL"} and nightly.schedules
    kind = deps["oracle-zdb"]._parameter_openapi_schema.model_dump()["properties"]["kind"]
    assert "snapclone" in kind["enum"]  # a select in the form


@pytest.mark.parametrize("scn, when, why", [
    (5, "2026-12-03 01:00:00", "not both"), (-1, "", "negative"), (0, "yesterday", "not a date"),
])
def test_recovery_point_bad_input_is_one_line(scn: int, when: str, why: str) -> None:
    from flows.operate_dr import _until

    with pytest.raises(UserError, match=why) as info:
        _until(scn, when)
    assert "\n" not in str(info.value)


@pytest.mark.usefixtures("prefect_server")
def test_site_failover_from_flat_parameters_dry_run(tmp_path: Path) -> None:
    from flows.operate_dr import site_failover

    cfg = tmp_path / "dc.yaml"
    cfg.write_text(DR)
    res = site_failover("B", "unplanned failover", True, " db ", str(cfg))
    assert res["action"] == "unplanned failover" and res["dry_run"]
    assert [g["group"] for g in res["groups"]] == ["db"]
    assert all(line.startswith("db: ") for line in res["plan"])
    with pytest.raises(UserError, match="unknown DR group"):
        site_failover("B", "failback", True, "nope", str(cfg))

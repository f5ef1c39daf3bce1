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

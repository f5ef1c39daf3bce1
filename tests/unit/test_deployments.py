"""The scheduled deployments build from a data-centre file, and refuse a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.serve import build
from dpflow.errors import UserError

GOOD = """
vcenters:
  - {name: vc1, host: 127.0.0.1, user: u, password: {env: X}}
stores:
  - {name: lib, path: store}
"""


def test_build_deployments(tmp_path: Path) -> None:
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(GOOD)
    deps = build(str(cfg), ["web01"])
    assert [d.name for d in deps] == ["nightly-image-backup", "weekly-verify",
                                      "weekly-forget", "weekly-prune"]
    assert deps[0].parameters == {"config": str(cfg), "vms": ["web01"]}
    assert all(d.schedules for d in deps)


def test_bad_config_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "dc.yaml"
    cfg.write_text(GOOD + "nightly: yes\n")
    with pytest.raises(UserError, match="unknown key"):
        build(str(cfg), ["web01"])

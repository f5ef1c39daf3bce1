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

"""Bad input through the CLI: one clear line, exit code 2, no traceback, nothing touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.guest_disks import MiB

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def _api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())


def run(*args: str) -> tuple[int, str]:
    """The CLI as a user runs it: its own process, its own stdout and stderr."""
    p = subprocess.run([sys.executable, "-m", "dpflow_cli", *args], capture_output=True,
                       text=True, env=dict(os.environ, COLUMNS="200"), timeout=300)
    return p.returncode, p.stdout + p.stderr


def assert_one_line(code: int, out: str, words: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], out


def edit(cfg: Path, old: str, new: str) -> Path:
    text = cfg.read_text()
    assert old in text, text
    cfg.write_text(text.replace(old, new))
    return cfg


def test_unknown_vm(dc_config: Path, vcsim) -> None:
    assert_one_line(*run("backup", "vm", "no-such-vm", "-c", str(dc_config)),
                    "unknown VM 'no-such-vm'")


def test_bad_yaml_and_unknown_key(dc_config: Path) -> None:
    dc_config.write_text(dc_config.read_text() + "retention_dayz: 7\n")
    assert_one_line(*run("backup", "vm", "x", "-c", str(dc_config)), "unknown key")
    dc_config.write_text("vcenters: [\n")
    assert_one_line(*run("backup", "vm", "x", "-c", str(dc_config)), "not valid YAML")


def test_unreachable_vcenter(dc_config: Path, vcsim) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    edit(dc_config, f"port: {vcsim.port}", f"port: {closed}")
    assert_one_line(*run("backup", "vm", "x", "-c", str(dc_config)), "unreachable")


def test_wrong_credentials(dc_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPFLOW_TEST_VC_PASSWORD", "wrong")
    assert_one_line(*run("backup", "vm", "x", "-c", str(dc_config)), "wrong user or password")


def test_untrusted_certificate(dc_config: Path, vcsim, tmp_path: Path) -> None:
    from simulators.tls import ensure_certs

    other = ensure_certs(tmp_path / "other-ca")
    edit(dc_config, str(vcsim.ca_file), str(other.ca_file))
    assert_one_line(*run("backup", "vm", "x", "-c", str(dc_config)),
                    "TLS certificate not trusted")


def test_restore_refusals(dc_config: Path, vcsim, tmp_path: Path) -> None:
    from flows.vm_image import backup_vm_image

    vcsim.create_vm("cli-src", [2 * MiB])
    r = backup_vm_image(str(dc_config), "cli-src")
    c = str(dc_config)
    assert_one_line(*run("restore", "vm", "cli-src", "--version", "nope", "-c", c),
                    "unknown version 'nope'")
    vcsim.create_vm("cli-running", [2 * MiB], power_on=True)
    assert_one_line(*run("restore", "vm", "cli-src", "--as", "cli-running", "--force", "-c", c),
                    "poweredOn")
    vcsim.create_vm("cli-off", [2 * MiB])
    assert_one_line(*run("restore", "vm", "cli-src", "--as", "cli-off", "-c", c),
                    "already exists")
    code, out = run("restore", "vm", "cli-src", "--as", "cli-off", "--force", "-c", c)
    assert code == 0 and r.version_id in out, out


def test_backup_and_versions_commands(dc_config: Path, vcsim) -> None:
    vcsim.create_vm("cli-b1", [2 * MiB])
    code, out = run("backup", "vm", "cli-b1", "-c", str(dc_config))
    assert code == 0 and "completed" in out, out
    code, out = run("versions", "cli-b1", "-c", str(dc_config))
    assert code == 0 and "cli-b1" in out, out


def test_wrong_or_missing_store_key(dc_config: Path, vcsim, monkeypatch) -> None:
    from flows.vm_image import backup_vm_image

    vcsim.create_vm("cli-key", [2 * MiB])
    backup_vm_image(str(dc_config), "cli-key")
    store = dc_config.parent / "store"

    def content() -> list[str]:  # SQLite's -wal/-shm come and go with connections
        return sorted(p.name for p in store.rglob("*") if not p.name.endswith(("-wal", "-shm")))

    before = content()
    monkeypatch.setenv("DPFLOW_TEST_STORE_KEY", "cd" * 32)
    assert_one_line(*run("backup", "vm", "cli-key", "-c", str(dc_config)), "wrong key")
    assert_one_line(*run("verify", "-c", str(dc_config)), "wrong key")
    monkeypatch.delenv("DPFLOW_TEST_STORE_KEY")
    assert_one_line(*run("backup", "vm", "cli-key", "-c", str(dc_config)),
                    "DPFLOW_TEST_STORE_KEY is empty")
    assert content() == before  # nothing written
    assert vcsim.snapshot_count("cli-key") == 0


def test_a_mistyped_store_path_is_one_line_and_creates_nothing(dc_config: Path, vcsim) -> None:
    from flows.vm_image import backup_vm_image

    vcsim.create_vm("cli-typo", [2 * MiB])
    r = backup_vm_image(str(dc_config), "cli-typo")
    typo = dc_config.parent / "stroe"
    c = str(edit(dc_config, "path: store", "path: stroe"))
    assert_one_line(*run("verify", "-c", c), f"no store at {typo}")
    assert_one_line(*run("restore", "vm", "cli-typo", "--version", r.version_id, "--as",
                         "cli-typo-r", "-c", c), f"no store at {typo}")
    assert_one_line(*run("prune", "-c", c), f"no store at {typo}")
    assert not typo.exists()
    assert not vcsim.vm_exists("cli-typo-r")


def test_preflight_transient_faults_are_retried(dc_config: Path, vcsim) -> None:
    """A transient fault in the CLI's pre-flight calls (the login check, the VM lookup) is
    retried like a task step, not a failed run: here the lookup then says the VM is unknown
    (exit 2). A fault that stays fails after the bounded attempts (exit 1)."""
    from dpflow_cli.app import PREFLIGHT_ATTEMPTS

    login = vcsim.set_fault(method="Login", kind="http", status=503, count=1)
    lookup = vcsim.set_fault(method="CreateContainerView", kind="http", status=503, count=1)
    try:
        code, out = run("backup", "vm", "no-such-vm", "-c", str(dc_config))
        hits = {r["id"]: r["hits"] for r in vcsim.faults()}
        assert hits[login["id"]] == 1 and hits[lookup["id"]] == 1, (hits, out)
        assert code == 2 and "unknown VM 'no-such-vm'" in out, out
        assert out.count("retrying:") == 2 and "Traceback" not in out, out
        vcsim.clear_faults()
        stays = vcsim.set_fault(method="Login", kind="http", status=503, count=0)
        code, out = run("backup", "vm", "no-such-vm", "-c", str(dc_config))
        hits = {r["id"]: r["hits"] for r in vcsim.faults()}
        assert code == 1 and hits[stays["id"]] == PREFLIGHT_ATTEMPTS, (hits, out)
    finally:
        vcsim.clear_faults()

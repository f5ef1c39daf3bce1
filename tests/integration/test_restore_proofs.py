"""Restore tests with signed proofs, on real bytes: the real pyVmomi driver against vcsim.

A good version boots in the isolated lab and proves; its proof verifies, and stops
verifying when its text, signature or catalog row is altered or its version is damaged
later. A version damaged before the test fails with the broken chunk named. A guest
that never reports a heartbeat fails after the timeout. No test VM is ever left behind.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from dpflow.environment import environment
from dpflow.store.manifest import read_manifest
from dpflow.store.packs import pack_path
from simulators.guest_disks import MiB, make_guest_disk
from tests.integration.test_bad_input import cli

pytestmark = pytest.mark.usefixtures("prefect_server")
KEY = "5f" * 32  # an ed25519 seed, for tests only


def lab_config(cfg: Path, monkeypatch: pytest.MonkeyPatch, vcsim, **tests) -> Path:
    monkeypatch.setenv("DPFLOW_TEST_PROOF_KEY", KEY)
    monkeypatch.setenv("DPFLOW_TEST_GUEST_PASSWORD", vcsim.guest_password)
    doc = yaml.safe_load(cfg.read_text())
    doc["restore_tests"] = {"proof_key": {"env": "DPFLOW_TEST_PROOF_KEY"},
                            "guest_password": {"env": "DPFLOW_TEST_GUEST_PASSWORD"},
                            "heartbeat_timeout_s": 30, **tests}
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def backed_up_vm(vcsim, cfg: Path, tmp_path: Path, blank: bool = False,
                 networks: tuple[str, ...] = ()) -> tuple[str, str, bytes]:
    """A VM with an ext4 guest disk (or random bytes only), and NICs on `networks`, backed
    up; (name, version, the guest's /etc/hostname)."""
    from flows.vm_image import backup_vm_image

    name = f"pv-{uuid.uuid4().hex[:8]}"
    vcsim.create_vm(name, [12 * MiB], networks=networks)
    img = tmp_path / f"{name}.img"
    if blank:
        img.write_bytes(b"\x5a" * (12 * MiB))
    else:
        make_guest_disk(img, 12 * MiB, seed=7)
    vcsim.seed_disk(name, 0, img)
    r = backup_vm_image(str(cfg), name)
    assert r.status == "completed"
    return name, r.version_id, b"guest-7\n"


def damage_a_chunk(cfg: Path, version_id: str) -> str:
    """Flip one byte in the middle of the version's first stored chunk, in its pack file."""
    env = environment(cfg)
    store = env.store("library")
    cid = next(c for c in read_manifest(store, version_id).disks[0].chunks if c)
    pack, offset, length = store.index.lookup(cid)
    path = pack_path(store.packs_dir, pack)
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        b = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    return cid


def vm_names(vcsim) -> set[str]:
    from pyVmomi import vim

    content = vcsim.si().content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    try:
        return {vm.name for vm in view.view}
    finally:
        view.Destroy()


def edit_proof(cfg: Path, proof_id: str, sql: str, **params) -> None:
    with environment(cfg).catalog().engine.begin() as c:
        c.execute(text(sql), {"id": proof_id, **params})


def test_a_good_version_proves_and_its_proof_resists_tampering(vcsim, dc_config, tmp_path,
                                                               monkeypatch):
    from dpflow.proof_verify import verify_proof
    from flows.restore_test import verify_restore

    name, version, hostname = backed_up_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim, checks={name: {
        "files": {"/etc/hostname": hashlib.sha256(hostname).hexdigest(), "/var/log": None},
        "probes": ["guest-file:/etc/hostname"]}})
    r = verify_restore(str(cfg), name)
    assert r.status == "passed", r.checks
    assert {c.name: c.status for c in r.checks} == {
        "chunks": "passed", "disks": "passed", "isolation": "passed",
        "guest file systems": "passed", "files": "passed", "heartbeat": "passed",
        "probe guest-file:/etc/hostname": "passed", "cleanup": "passed"}
    assert r.version_id == version and r.test_vm_removed
    assert not vcsim.vm_exists(r.test_vm)  # the test VM is gone
    assert vcsim.vm(name).runtime.powerState == "poweredOff"  # production untouched

    env = environment(cfg)
    v = verify_proof(env, r.proof_id)
    assert v.ok, v.line
    # the CLI's names: `dpflow proofs [VM]` lists it, `dpflow proof verify ID` checks it
    code, out = cli(["proofs", name], cfg, {}, monkeypatch)
    assert code == 0 and r.proof_id in out and "passed" in out, out
    code, out = cli(["proof", "verify", r.proof_id], cfg, {}, monkeypatch)
    assert code == 0 and out.startswith("valid:"), out
    assert cli(["proof", "list"], cfg, {}, monkeypatch)[0] == 2  # one name per command
    row_body = env.catalog().engine.connect().execute(
        text("SELECT body, signature FROM restore_proofs WHERE id = :id"),
        {"id": r.proof_id}).one()
    # the text altered (a check's detail): the signature no longer matches
    doc = json.loads(row_body.body)
    doc["checks"][0]["detail"] += " (edited)"
    edit_proof(cfg, r.proof_id, "UPDATE restore_proofs SET body = :b WHERE id = :id",
               b=json.dumps(doc, sort_keys=True, separators=(",", ":")))
    v = verify_proof(env, r.proof_id)
    assert not v.ok and "signature does not match its text" in v.line
    # text restored, signature altered
    bad_sig = ("00" if row_body.signature[:2] != "00" else "11") + row_body.signature[2:]
    edit_proof(cfg, r.proof_id, "UPDATE restore_proofs SET body = :b, signature = :s "
               "WHERE id = :id", b=row_body.body, s=bad_sig)
    assert "signature does not match" in verify_proof(env, r.proof_id).line
    # the catalog's outcome column altered while the signed text says passed
    edit_proof(cfg, r.proof_id, "UPDATE restore_proofs SET signature = :s, outcome = 'failed' "
               "WHERE id = :id", s=row_body.signature)
    assert "the catalog row was altered" in verify_proof(env, r.proof_id).line
    edit_proof(cfg, r.proof_id, "UPDATE restore_proofs SET outcome = 'passed' WHERE id = :id")
    assert verify_proof(env, r.proof_id).ok
    # the version damaged after the test: the proof no longer holds (reading the data)
    cid = damage_a_chunk(cfg, version)
    v = verify_proof(env, r.proof_id, read_data=True)
    assert not v.ok and "damaged since the test" in v.line and cid in v.line, v.line


def test_a_damaged_version_fails_with_its_chunk_named_and_no_vm(vcsim, dc_config, tmp_path,
                                                                monkeypatch):
    from dpflow.catalog_proofs import proofs
    from dpflow.proof_verify import verify_proof
    from flows.restore_test import RestoreTestFailed, verify_restore

    name, version, _ = backed_up_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    cid = damage_a_chunk(cfg, version)
    before = vm_names(vcsim)
    with pytest.raises(RestoreTestFailed, match=cid):
        verify_restore(str(cfg), name)
    env = environment(cfg)
    (row,) = proofs(env.catalog(), name)
    assert row.outcome == "failed" and row.version_id == version
    v = verify_proof(env, row.id)  # authentic, but it proves nothing
    assert not v.ok and "FAILED: chunks: 1 of" in v.line and cid in v.line, v.line
    assert vm_names(vcsim) == before  # no test VM was made for a version that cannot be read


def test_a_guest_without_heartbeat_times_out_and_leaves_no_vm(vcsim, dc_config, tmp_path,
                                                              monkeypatch):
    """Fails mid-way (after the VM was made, restored and powered on): cleaned up anyway."""
    from dpflow.catalog_proofs import proofs
    from flows.restore_test import RestoreTestFailed, verify_restore

    name, _, _ = backed_up_vm(vcsim, dc_config, tmp_path, blank=True)
    cfg = lab_config(dc_config, monkeypatch, vcsim, heartbeat_timeout_s=2)
    with pytest.raises(RestoreTestFailed, match="no readable guest file system"):
        verify_restore(str(cfg), name)
    (row,) = proofs(environment(cfg).catalog(), name)
    checks = {c["name"]: c for c in json.loads(row.body)["checks"]}
    assert checks["disks"]["status"] == "passed"  # the bytes themselves came back
    assert checks["heartbeat"]["status"] == "failed"
    assert "no guest heartbeat within 2s" in checks["heartbeat"]["detail"]
    test_vm = json.loads(row.body)["test_vm"]
    assert not vcsim.vm_exists(test_vm)


def test_bad_input_is_one_line_and_exit_2(vcsim, dc_config, monkeypatch):
    """Through the CLI, as a user meets it: nothing is created for a mistake."""
    from prefect.settings import PREFECT_API_URL

    from dpflow.errors import UserError
    from flows.restore_test import plan_test
    from tests.integration.test_cli import assert_one_line, run

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    cfg = lab_config(dc_config, monkeypatch, vcsim)
    before = vm_names(vcsim)
    assert_one_line(*run("test-restore", "no-such-vm", "-c", str(cfg)),
                    "no version of vm 'no-such-vm' in the catalog")
    monkeypatch.delenv("DPFLOW_TEST_PROOF_KEY")
    assert_one_line(*run("test-restore", "no-such-vm", "-c", str(cfg)),
                    "environment variable DPFLOW_TEST_PROOF_KEY is empty")
    monkeypatch.setenv("DPFLOW_TEST_PROOF_KEY", "not-a-key")  # in-process: one CLI run less
    with pytest.raises(UserError, match="not an ed25519 private key") as exc:
        plan_test(environment(cfg), "no-such-vm", None)
    assert "not-a-key" not in str(exc.value)  # the secret is never shown
    assert_one_line(*run("proof", "verify", "nosuchproof", "-c", str(cfg)),
                    "unknown proof 'nosuchproof'")
    assert vm_names(vcsim) == before


def test_verify_restores_tests_each_vm_of_a_list_with_one_proof_each(vcsim, dc_config, tmp_path,
                                                                      monkeypatch):
    """Two VMs in one run: a good one proves, a damaged one fails with its chunk named,
    and the run goes on past it; one proof each in the catalog; a list over the limit is
    refused before anything runs."""
    from dpflow.catalog_proofs import proofs
    from dpflow.errors import UserError
    from flows.restore_test import verify_restores

    good, good_version, _ = backed_up_vm(vcsim, dc_config, tmp_path)
    bad, bad_version, _ = backed_up_vm(vcsim, dc_config, tmp_path)
    cfg = lab_config(dc_config, monkeypatch, vcsim, max_vms=2)
    cid = damage_a_chunk(cfg, bad_version)
    with pytest.raises(UserError, match="3 VMs asked, restore_tests.max_vms is 2"):
        verify_restores([good, bad, good], str(cfg))
    out = verify_restores([bad, good], str(cfg))
    assert [o["vm"] for o in out] == [bad, good]
    assert out[0]["status"] == "failed" and cid in out[0]["message"], out[0]
    assert out[1]["status"] == "passed" and out[1]["version_id"] == good_version, out[1]
    catalog = environment(cfg).catalog()
    (p_bad,), (p_good,) = proofs(catalog, bad), proofs(catalog, good)
    assert (p_bad.outcome, p_bad.version_id) == ("failed", bad_version)
    assert (p_good.outcome, p_good.id) == ("passed", out[1]["proof_id"])
    assert not vcsim.vm_exists(out[1]["test_vm"])

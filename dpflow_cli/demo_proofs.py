"""The demo's restore-test and Instant VM Recovery part: a version of db01 booted in the
isolated lab with a signed proof that is then verified, and web01 run straight from its
version in the store, then aborted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

KEY_ENV = "DPFLOW_PROOF_KEY"


def _proof_key(workdir: Path) -> None:
    """The demo's own signing key (in production: a Prefect Secret block)."""
    from dpflow.proofs import new_key

    key_file = workdir / "proof.key"
    if not key_file.exists():
        key_file.write_text(new_key()[0])
        key_file.chmod(0o600)
    os.environ.setdefault(KEY_ENV, key_file.read_text().strip())


def run_proofs_demo(sim: Any, config: Path, workdir: Path, console: Console,
                    db_version: str) -> list[tuple[str, str, str]]:
    from dpflow.environment import environment
    from dpflow.proof_verify import verify_proof
    from flows.restore_test import verify_restore

    _proof_key(workdir)
    rows: list[tuple[str, str, str]] = []
    p = verify_restore(str(config), "db01", db_version)
    console.print(f"  db01 version {p.version_id} booted as {p.test_vm} on the isolated port "
                  f"group: {p.status}, {len(p.checks)} checks, {p.seconds:.1f}s; test VM "
                  f"removed: {p.test_vm_removed}")
    for c in p.checks:
        console.print(f"    {c.name}: {c.status} — {c.detail}", highlight=False)
    v = verify_proof(environment(config), p.proof_id)
    console.print(f"  {v.line}", highlight=False)
    rows += [("restore test db01 (signed proof)", p.status,
              f"proof {p.proof_id}, {len(p.checks)} checks, {p.seconds:.1f}s"),
             ("proof verify", "valid" if v.ok else "NOT valid", "ed25519, manifest SHA-256")]
    if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
        console.print("  instant recovery skipped: no FUSE on this machine (fuse3)")
        return rows + [("instant recovery web01", "skipped", "no FUSE on this machine")]
    from flows.instant import abort_instant_recovery, instant_recover_vm

    r = instant_recover_vm(str(config), "web01", as_name="web01-instant")
    running = sim.vm(r.name).runtime.powerState == "poweredOn"
    console.print(f"  web01 running as {r.name} from version {r.version_id} on datastore "
                  f"{r.datastore} ({r.disk_bytes / 1e6:,.0f} MB of disks, nothing copied): "
                  f"powered on {r.seconds_to_power_on:.1f}s after the start")
    left = abort_instant_recovery(str(config), r.name)
    gone = not sim.vm_exists(r.name) and not left
    console.print(f"  aborted: VM, datastore, published version and overlay removed: {gone}")
    return rows + [("instant recovery web01", "running" if running else "NOT running",
                    f"powered on in {r.seconds_to_power_on:.1f}s, nothing copied"),
                   ("instant recovery aborted", "nothing left" if gone else "NOT clean", "")]

"""A restore test's proof: signed, recorded in the catalog, shown as an artifact, announced.

The signing secret is resolved inside the signing step and goes nowhere else: not into
a task parameter or result (Prefect records those), not into a log line.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from dpflow import events
from dpflow.catalog_proofs import record_proof
from dpflow.environment import Environment
from dpflow.errors import first_line
from dpflow.proofs import ProofBody, key_id, private_key, sign
from tasks.common import step


def signing_key_id(env: Environment) -> str:
    """The id of the configured signing key: a missing or malformed secret is one line
    (UserError) before anything is touched; the key itself is dropped at once."""
    return key_id(private_key(env.dc.restore_tests.proof_key.resolve()).public_key())


@step(name="sign and record proof", retries=3)
def seal_proof(env: Environment, fields: dict[str, Any]) -> ProofBody:
    """The proof signed with the data centre's key and stored in the catalog (idempotent
    by proof id: a retry after a lost commit finds the row)."""
    from dpflow.catalog_proofs import proof
    from dpflow.errors import NotFound

    key = private_key(env.dc.restore_tests.proof_key.resolve())
    body = ProofBody(**fields, key_id=key_id(key.public_key()))
    text, signature = sign(body, key)
    cat = env.catalog()
    try:
        proof(cat, body.proof_id)
        return body
    except NotFound:
        pass
    record_proof(cat, proof_id=body.proof_id, vm=body.vm, version_id=body.version_id,
                 outcome=body.outcome, created=body.ended, key_id=body.key_id, body=text,
                 signature=signature)
    return body


def publish_proof(body: ProofBody) -> None:
    """The proof as a Prefect artifact (a table of checks) and a dpflow.proof.* event; an
    artifact or event that cannot be sent never fails the run."""
    log = get_run_logger()
    rows = "\n".join(f"| {c.name} | {c.status} | {c.detail.replace('|', '/')} |"
                     for c in body.checks)
    md = (f"# Restore proof {body.proof_id}: **{body.outcome}**\n\n"
          f"VM **{body.vm}**, version `{body.version_id}` (created "
          f"{body.version_created:%Y-%m-%d %H:%M:%S} UTC), manifest SHA-256 "
          f"`{body.manifest_sha256}`; booted as "
          f"`{body.test_vm}` on isolated port group `{body.network}`, "
          f"{body.started:%Y-%m-%d %H:%M:%S}–{body.ended:%H:%M:%S} UTC.\n\n"
          f"| check | result | detail |\n|---|---|---|\n{rows}\n\n"
          f"Signed (ed25519) by key `{body.key_id}`; check it with "
          f"`dpflow proof verify {body.proof_id}`.\n")
    try:
        create_markdown_artifact(markdown=md, key=_artifact_key(body.vm),
                                 description=f"restore proof {body.proof_id}: {body.outcome}")
    except Exception as exc:  # noqa: BLE001 - reported; the proof is in the catalog
        log.warning("artifact of proof %s not created: %s", body.proof_id, first_line(exc))
    try:
        events.emit(events.outcome("proof", body.outcome), "vm", body.vm,
                    version_id=body.version_id, proof_id=body.proof_id, outcome=body.outcome,
                    test_vm=body.test_vm, failed=body.first_failure() or None)
    except Exception as exc:  # noqa: BLE001
        log.warning("event of proof %s not sent: %s", body.proof_id, first_line(exc))


def _artifact_key(vm: str) -> str:
    """Prefect artifact keys: lower-case letters, digits and dashes."""
    return "restore-proof-" + (re.sub(r"[^a-z0-9-]+", "-", vm.lower()).strip("-") or "vm")

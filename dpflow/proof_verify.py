"""Checking a stored restore proof, later: is it authentic, and does it still hold?

Authentic: the signature matches the stored text under this data centre's key (the
published public key, or the one derived from the signing secret), and the catalog's
columns agree with the text. Still holds: the version is still catalogued, its manifest
in the store has the SHA-256 the proof names, every chunk it lists is in the store (and,
with read_data, reads back with its hash). The first failure found is the verdict's one
line; a valid proof of a failed test is authentic but proves nothing restorable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dpflow.catalog_proofs import ProofRow, proof, proofs
from dpflow.environment import Environment
from dpflow.errors import NotFound, UserError, first_line
from dpflow.proofs import ProofBody, key_id, manifest_digest, private_key, public_key
from dpflow.store.chunks import CorruptChunk
from dpflow.store.manifest import read_manifest


@dataclass
class Verdict:
    proof_id: str
    ok: bool
    line: str
    body: ProofBody | None = None
    notes: list[str] = field(default_factory=list)


def trusted_key(env: Environment) -> Ed25519PublicKey:
    """The published public key if the config has one, else the signing secret's."""
    policy = env.dc.restore_tests
    if policy.public_key:
        return public_key(policy.public_key)
    return private_key(policy.proof_key.resolve()).public_key()


def _authentic(row: ProofRow, key: Ed25519PublicKey) -> tuple[ProofBody | None, str]:
    from dpflow.proofs import signature_ok

    try:
        body = ProofBody.model_validate(json.loads(row.body))
    except ValueError as exc:
        return None, f"its text is not a proof: {first_line(exc)}"
    if body.key_id != key_id(key):
        return body, (f"signed by key {body.key_id}, not by this data centre's key "
                      f"{key_id(key)}")
    if not signature_ok(row.body, row.signature, key):
        return body, "its signature does not match its text: altered after signing"
    for what, stored, signed in (("proof id", row.id, body.proof_id), ("VM", row.vm, body.vm),
                                 ("version", row.version_id, body.version_id),
                                 ("outcome", row.outcome, body.outcome)):
        if stored != signed:
            return body, (f"the catalog says {what} {stored!r}, the signed text {signed!r}: "
                          f"the catalog row was altered")
    return body, ""


def _still_holds(env: Environment, body: ProofBody, read_data: bool) -> tuple[str, list[str]]:
    notes: list[str] = []
    try:
        row = env.catalog().version(body.version_id)
    except NotFound:
        return f"version {body.version_id} is no longer in the catalog (forgotten?)", notes
    store = env.store(row.store)
    try:
        manifest = read_manifest(store, body.version_id)
    except (NotFound, CorruptChunk) as exc:
        return f"version {body.version_id}: {first_line(exc)}", notes
    digest = manifest_digest(manifest)
    if digest != body.manifest_sha256:
        return (f"the manifest of version {body.version_id} has changed since the test "
                f"(SHA-256 {digest[:16]}..., the proof says {body.manifest_sha256[:16]}...)",
                notes)
    ids = sorted({c for d in manifest.disks for c in d.chunks if c is not None})
    bad = []
    for cid in ids:
        try:
            if read_data:
                store.get(cid)
            elif store.index.lookup(cid) is None:
                raise CorruptChunk(f"chunk {cid} is missing from the store")
        except CorruptChunk as exc:
            bad.append(first_line(exc))
    if bad:
        return (f"version {body.version_id} is damaged since the test: {len(bad)} of "
                f"{len(ids)} chunks: {bad[0]}"), notes
    notes.append(f"{len(ids)} chunks {'read and re-hashed' if read_data else 'present'}")
    return "", notes


def verify_proof(env: Environment, proof_id: str, read_data: bool = False) -> Verdict:
    """The verdict on one stored proof (NotFound for an unknown id)."""
    row = proof(env.catalog(), proof_id)
    body, why = _authentic(row, trusted_key(env))
    if why:
        return Verdict(proof_id, False, f"proof {proof_id} is INVALID: {why}", body)
    assert body is not None
    if body.outcome != "passed":
        return Verdict(proof_id, False, f"proof {proof_id} is authentic, but the restore test "
                       f"FAILED: {body.first_failure()}", body)
    why, notes = _still_holds(env, body, read_data)
    if why:
        return Verdict(proof_id, False, f"proof {proof_id} no longer holds: {why}", body, notes)
    return Verdict(proof_id, True,
                   f"proof {proof_id} is valid: VM {body.vm} version {body.version_id} "
                   f"restored, booted and checked ({len(body.checks)} checks) at "
                   f"{body.ended:%Y-%m-%d %H:%M:%S} UTC, signed by key {body.key_id}", body, notes)


def latest_proof_id(env: Environment, vm: str) -> str:
    rows = proofs(env.catalog(), vm)
    if not rows:
        raise UserError(f"no restore proof of VM '{vm}': `dpflow test-restore {vm}` makes one")
    return rows[-1].id

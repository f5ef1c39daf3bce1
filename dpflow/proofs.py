"""Restore proofs: signed records that a version was restored, booted and checked.

A proof is a JSON document (ProofBody) signed with ed25519. What is signed is the
document's canonical form (keys sorted, no spaces, UTF-8), and the catalog stores
exactly those bytes with the signature, so a verifier needs nothing but the text, the
signature and the data centre's public key. Anything changed after signing (a field of
the document, the signature, the outcome column beside it) fails verification.

The signing key is a secret (an environment variable or a Prefect Secret block, see
config.RestoreTests.proof_key): 64 hex characters (the ed25519 seed) or a PKCS#8 PEM. It
is read when a proof is signed or checked, never logged and never stored; the proof
carries only the key's id (the first 16 hex characters of the SHA-256 of the public key).
A verifier without the secret uses the published public key (restore_tests.public_key).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel

from dpflow.errors import UserError
from dpflow.store.manifest import VersionManifest

FORMAT = "dpflow-restore-proof/1"
CheckStatus = Literal["passed", "failed", "skipped"]


class Check(BaseModel):
    """One check of a restore test: what was looked at and what was found."""

    name: str
    status: CheckStatus
    detail: str = ""


class ProofBody(BaseModel):
    """The signed content of a proof."""

    format: str = FORMAT
    proof_id: str
    vm: str
    version_id: str
    version_created: datetime
    store: str
    manifest_sha256: str
    test_vm: str  # the name the version ran under, on the isolated network
    network: str
    started: datetime
    ended: datetime
    outcome: Literal["passed", "failed"]
    checks: list[Check]
    key_id: str

    def canonical(self) -> bytes:
        return canonical(self)

    def first_failure(self) -> str:
        bad = next((c for c in self.checks if c.status == "failed"), None)
        return f"{bad.name}: {bad.detail}" if bad else ""


def canonical(body: BaseModel) -> bytes:
    return json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def manifest_digest(manifest: VersionManifest) -> str:
    """SHA-256 of the manifest's canonical JSON: which chunks, in which order, of which VM."""
    return hashlib.sha256(canonical(manifest)).hexdigest()


def outcome_of(checks: list[Check]) -> Literal["passed", "failed"]:
    ok = checks and all(c.status != "failed" for c in checks)
    return "passed" if ok else "failed"


# --- keys -----------------------------------------------------------------------------
KEY_HELP = ("give 64 hex characters (an ed25519 seed) or a PKCS#8 PEM; `dpflow proof keygen` "
            "makes one")


def private_key(secret: str) -> Ed25519PrivateKey:
    """The signing key from its secret text; a UserError that never shows the text."""
    text = secret.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not ed25519")
            return key
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    except (ValueError, TypeError):
        raise UserError(f"the proof signing key is not an ed25519 private key: {KEY_HELP}"
                        ) from None


def public_key(text: str) -> Ed25519PublicKey:
    """A published verification key: 64 hex characters (raw) or a PEM public key."""
    t = text.strip()
    try:
        if t.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(t.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not ed25519")
            return key
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(t))
    except (ValueError, TypeError):
        raise UserError("restore_tests.public_key is not an ed25519 public key: give the 64 "
                        "hex characters `dpflow proof keygen` printed") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def new_key() -> tuple[str, str]:
    """(private seed hex, public key hex) of a fresh key."""
    k = Ed25519PrivateKey.generate()
    seed = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())
    return seed.hex(), raw_public(k.public_key()).hex()


def sign(body: ProofBody, key: Ed25519PrivateKey) -> tuple[str, str]:
    """(the canonical text, its signature in hex)."""
    data = body.canonical()
    return data.decode(), key.sign(data).hex()


def signature_ok(text: str, signature_hex: str, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(bytes.fromhex(signature_hex), text.encode())
        return True
    except (InvalidSignature, ValueError):
        return False

"""Encryption at rest: AES-256-GCM for every chunk and manifest, keyed chunk ids.

One 32-byte master key (from a Prefect Secret block or an environment variable, never
the catalog or a log) gives two independent keys by blake3 key derivation: one keys the
chunk ids (so an id says nothing about the plaintext: no confirmation of a known file),
one encrypts. Each blob has a fresh random 96-bit nonce and is bound to its id (AAD), so
a blob moved to another id fails authentication.
"""

from __future__ import annotations

import base64
import os

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dpflow.errors import UserError

NONCE = 12
_CHECK = b"dpflow store key check"


def parse_key(text: str) -> bytes:
    """A master key as given by the administrator: 64 hex digits or base64 of 32 bytes."""
    t = text.strip()
    try:
        raw = bytes.fromhex(t) if len(t) == 64 else base64.b64decode(t, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UserError("the store key must be 32 bytes, as 64 hex digits or base64; "
                        "make one with `python -c 'import os;print(os.urandom(32).hex())'`")
    return raw


class Sealer:
    """Keyed ids and AEAD for one store."""

    def __init__(self, master: bytes) -> None:
        self.id_key = blake3.blake3(master, derive_key_context="dpflow 2026 chunk id").digest()
        self._aead = AESGCM(
            blake3.blake3(master, derive_key_context="dpflow 2026 chunk seal").digest())

    def chunk_id(self, data: bytes | memoryview) -> str:
        return blake3.blake3(data, key=self.id_key, max_threads=1).hexdigest()

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag as exc:
            raise ValueError("authentication failed") from exc

    def key_check(self) -> str:
        return base64.b64encode(self.seal(_CHECK, b"key-check")).decode()

    def verify_key(self, check: str) -> None:
        try:
            ok = self.open(base64.b64decode(check), b"key-check") == _CHECK
        except ValueError:
            ok = False
        if not ok:
            raise UserError("wrong key for this encrypted store: the store's key check does "
                            "not open with it; give the key the store was created with")

"""Restore proofs in the catalog: the signed text, its signature, and columns to find them.

A proof outlives its version (forget removes versions, never proofs: the history of what
was proven stays), so its version id is a plain column, not a foreign key. The vm,
version and outcome columns are copies of the signed text for queries only; verification
reads the text (and checks that the copies agree with it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from dpflow.catalog import Base, Catalog
from dpflow.errors import NotFound


class ProofRow(Base):
    __tablename__ = "restore_proofs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vm: Mapped[str] = mapped_column(String(255), index=True)
    version_id: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)  # the signed canonical JSON, byte for byte
    signature: Mapped[str] = mapped_column(String(128))  # ed25519, hex


def _ensure(cat: Catalog) -> None:
    ProofRow.__table__.create(cat.engine, checkfirst=True)  # type: ignore[attr-defined]


def record_proof(cat: Catalog, *, proof_id: str, vm: str, version_id: str, outcome: str,
                 created: datetime, key_id: str, body: str, signature: str) -> None:
    _ensure(cat)
    with cat.session() as db, db.begin():
        db.add(ProofRow(id=proof_id, vm=vm, version_id=version_id, outcome=outcome,
                        created=created, key_id=key_id, body=body, signature=signature))


def proofs(cat: Catalog, vm: str | None = None) -> list[ProofRow]:
    """Oldest first."""
    _ensure(cat)
    with cat.session() as db:
        q = select(ProofRow)
        if vm is not None:
            q = q.where(ProofRow.vm == vm)
        return list(db.scalars(q.order_by(ProofRow.created, ProofRow.id)))


def proof(cat: Catalog, proof_id: str) -> ProofRow:
    _ensure(cat)
    with cat.session() as db:
        row = db.get(ProofRow, proof_id)
        if row is None:
            raise NotFound(f"unknown proof '{proof_id}': `dpflow proofs` shows them")
        return row

"""Bring a catalog's live schema up to the models, on every open: the one way it is made.

A catalog outlives the dpflow that created it, and SQLAlchemy's `create_all` only adds
missing tables. So the models are compared to the live database and what a newer dpflow
defines is added, never renamed or dropped:

* missing tables (with their indexes);
* missing columns that are nullable or have a constant default (old rows get it);
* missing indexes on existing tables (an index a newer model declares);
* text columns the models made longer: a `VARCHAR(n)` whose model is now unbounded text
  or a longer string is altered to the model's type. PostgreSQL enforces lengths (an old
  `files.path VARCHAR(4096)` refuses a longer NTFS path), SQLite does not, so only
  PostgreSQL needs the ALTER (varchar to text is a catalog-only change there, no rewrite).

Statements are idempotent where the database allows (`IF NOT EXISTS`), so two processes
opening one old catalog at once do not trip over each other's upgrade.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Column, Index, MetaData, String, inspect, text

from dpflow.errors import UserError

log = logging.getLogger(__name__)


def upgrade(engine: Any, metadata: MetaData) -> list[str]:
    """Create or extend the schema of `metadata` in `engine`'s database; the changes made
    (as `table.column: what`), empty when the catalog was current."""
    before = set(inspect(engine).get_table_names())
    metadata.create_all(engine)
    changes = [f"{t.name}: created" for t in metadata.sorted_tables if t.name not in before]
    live = inspect(engine)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if table.name not in before:
                continue
            have = {c["name"]: c for c in live.get_columns(table.name)}
            for col in table.columns:
                if col.name not in have:
                    changes.append(_add_column(conn, engine, table.name, col, postgres))
                elif postgres and _widened(have[col.name]["type"], col.type):
                    kind = col.type.compile(dialect=engine.dialect)
                    conn.execute(text(f'ALTER TABLE {table.name} ALTER COLUMN "{col.name}" '
                                      f'TYPE {kind}'))
                    changes.append(f"{table.name}.{col.name}: {have[col.name]['type']} -> {kind}")
            indexed = {i["name"] for i in live.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexed:
                    _create_index(conn, index, postgres)
                    changes.append(f"{table.name}: index {index.name}")
    if changes:
        log.info("catalog schema upgraded: %s", "; ".join(changes))
    return changes


def _add_column(conn: Any, engine: Any, table: str, col: Column[Any], postgres: bool) -> str:
    """ADD COLUMN for a column old rows can do without (NULL) or share (a constant
    default); a required column with nothing to fill old rows with is a UserError."""
    default = getattr(col.default, "arg", None) if col.default is not None else None
    if not col.nullable and (default is None or callable(default)):
        raise UserError(f"the catalog's table {table} lacks column {col.name}, which this "
                        f"dpflow requires and cannot fill in for existing rows: open it with "
                        f"the dpflow that created it, or start a new catalog")
    kind = col.type.compile(dialect=engine.dialect)
    clause = "" if col.nullable else f" NOT NULL DEFAULT {_literal(engine, col, default)}"
    exists = " IF NOT EXISTS" if postgres else ""
    conn.execute(text(f'ALTER TABLE {table} ADD COLUMN{exists} "{col.name}" {kind}{clause}'))
    return f"{table}.{col.name}: added"


def _literal(engine: Any, col: Column[Any], value: Any) -> str:
    processor = col.type.literal_processor(dialect=engine.dialect)
    return str(processor(value)) if processor else repr(value)


def _widened(live: Any, model: Any) -> bool:
    """Whether the model's type is a longer text than the live column's VARCHAR(n)."""
    if not isinstance(live, String) or live.length is None:
        return False
    if not isinstance(model, String):
        return False
    return model.length is None or model.length > live.length


def _create_index(conn: Any, index: Index, postgres: bool) -> None:
    if postgres:
        cols = ", ".join(f'"{c.name}"' for c in index.columns)
        unique = "UNIQUE " if index.unique else ""
        conn.execute(text(f'CREATE {unique}INDEX IF NOT EXISTS "{index.name}" '
                          f'ON {index.table.name} ({cols})'))  # type: ignore[union-attr]
    else:
        index.create(conn, checkfirst=True)

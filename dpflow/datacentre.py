"""The data centre as Prefect configuration: a block holding the data-centre document.

An administrator registers the file once (`dpflow dc register -c FILE`, or `register()`);
flows and deployments then take only the data centre's *name* (default "default"), so
no file path is typed into a form and every worker reads the same, server-side document.
The block holds the YAML as written: secrets stay references (env or Prefect Secret
blocks), resolved by the process that uses them. Relative paths keep meaning what they
meant next to the file: the block records the directory the file was registered from.

A name that is a path to an existing file (or ends in .yaml/.yml) is read from disk, so
the CLI's `-c FILE` and tests keep working without a registration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

from dpflow import config as cfg
from dpflow.errors import UserError

DEFAULT = "default"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DataCentreBlock(Block):
    """A dpflow data centre: vCenters, arrays, stores, proxies, limits (no secret values)."""

    _block_type_name = "dpflow data centre"
    _block_type_slug = "dpflow-data-centre"
    _description = ("The dpflow data-centre document (YAML, see docs/config.md). "
                    "Passwords and keys are references to env variables or Secret blocks.")

    document: str = Field(title="Data-centre document (YAML)")
    base_dir: str = Field(title="Directory relative paths are taken from")


def is_file_ref(dc: str) -> bool:
    return dc.endswith((".yaml", ".yml")) or "/" in dc or Path(dc).is_file()


def register(path: Path, name: str = DEFAULT) -> cfg.DataCentre:
    """Validate `path` and save it as the data centre `name` (replacing an older one)."""
    if not NAME.match(name):
        raise UserError(f"bad data-centre name '{name}': lower-case letters, digits and '-' "
                        f"(a Prefect block name)")
    dc = cfg.load(path)  # a bad file stops here with its one line; nothing is saved
    DataCentreBlock(document=path.read_text(), base_dir=str(path.parent.resolve())).save(
        name, overwrite=True)
    return dc


def read(dc: str) -> tuple[str, str, Path]:
    """(source, document, base directory) of a data centre named or given as a file."""
    if is_file_ref(dc):
        p = Path(dc).resolve()
        try:
            return str(p), p.read_text(), p.parent
        except OSError as exc:
            raise UserError(f"cannot read config {p}: {exc.strerror}; pass --config FILE "
                            f"or the name of a registered data centre") from exc
    try:
        block: Any = DataCentreBlock.load(dc)  # sync call: a block, not a coroutine
    except ValueError as exc:
        raise UserError(f"unknown data centre '{dc}': register it with `dpflow dc register "
                        f"-c FILE --name {dc}` (a Prefect block)") from exc
    return f"data centre '{dc}'", block.document, Path(block.base_dir)


def load(dc: str) -> cfg.DataCentre:
    """The validated data centre named `dc` (a registered block, or a file)."""
    source, text, base = read(dc)
    return cfg.parse(text, source, base)


def names() -> list[str]:
    """The registered data centres."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        try:
            docs = client.read_block_documents_by_type(DataCentreBlock.get_block_type_slug(),
                                                       include_secrets=False)
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            if getattr(getattr(exc, "response", None), "status_code", 404) != 404:
                raise
            return []  # the block type is made by the first registration
    return sorted(d.name for d in docs if d.name and not d.is_anonymous)

"""The `dpflow` console script: the composition root that wires every command.

Every user mistake ends as one red line and exit code 2; a failed backup or restore as
one line and exit code 1 (the details are in the Prefect UI); only a dpflow bug shows a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpflow_cli import (  # noqa: F401 - each registers its commands
    dc,
    dr,
    files,
    instant,
    luns,
    media,
    oracle,
    proofs,
    vm,
)
from dpflow_cli.app import app, console, guard, server_app


@app.command()
def demo(workdir: Annotated[Path, typer.Option(help="where the demo data centre lives")
                            ] = Path(".dpflow/demo"),
         disk_mib: Annotated[int, typer.Option(help="size of each demo disk")] = 256) -> None:
    """Run the demo data centre end to end: backup, restore, verify, report."""
    from dpflow_cli.demo import run_demo

    guard(lambda: run_demo(workdir.resolve(), disk_mib, console))


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the local Prefect server and print its UI address."""
    from dpflow import prefect_server

    url = guard(prefect_server.ensure_server)
    console.print(f"Prefect UI: {prefect_server.ui_url(url)}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by dpflow."""
    from dpflow import prefect_server

    console.print("stopped" if prefect_server.stop_server() else "no local server running")


def main() -> None:  # pragma: no cover - console entry
    app()

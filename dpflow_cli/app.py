"""The `dpflow` command line's shared parts: the Typer apps, one-line errors, progress bars.

Every user mistake ends as one red line and exit code 2; a failed backup or restore as
one line and exit code 1 (the details are in the Prefect UI); only a dpflow bug shows a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from dpflow.errors import DpflowError, TransientError, UserError
from dpflow.prefect_server import quiet_console, quiet_defaults

# before anything imports Prefect: the CLI prints its own one-line summaries; full run
# logs (with tracebacks) still reach the Prefect server and its UI
quiet_defaults()
quiet_console()

app = typer.Typer(help="dpflow: VM data protection as Prefect flows.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
backup_app = typer.Typer(help="Back up objects.", no_args_is_help=True)
restore_app = typer.Typer(help="Restore objects.", no_args_is_help=True)
server_app = typer.Typer(help="The local Prefect server.", no_args_is_help=True)
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
app.add_typer(server_app, name="server")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="DPFLOW_CONFIG",
                                         help="data-centre file (YAML)")]
DEFAULT_CONFIG = Path("dpflow.yaml")


EXIT_FAILED, EXIT_USER, EXIT_PARTIAL = 1, 2, 3  # the contract: README "Exit codes"


def exit_for(statuses: list[str]) -> None:
    """Leave with the contracted code: 1 if anything failed, 3 if anything was skipped or
    only partly done, else 0 (return normally)."""
    if "failed" in statuses:
        raise typer.Exit(EXIT_FAILED)
    if "skipped" in statuses or "partial" in statuses:
        raise typer.Exit(EXIT_PARTIAL)


def guard(fn: Callable[[], T]) -> T:
    """Turn dpflow's errors into one line and an exit code."""
    try:
        return fn()
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USER) from None
    except DpflowError as exc:
        err.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None


PREFLIGHT_ATTEMPTS, PREFLIGHT_DELAY_S = 3, 1.0  # as a task step's: 2 retries, 1 s apart


def preflight(fn: Callable[[], T]) -> T:
    """A pre-flight call (a login check, a lookup) retried like a task step: a transient
    fault is tried again, at most PREFLIGHT_ATTEMPTS times in all; anything else at once."""
    import time

    for attempt in range(1, PREFLIGHT_ATTEMPTS + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt == PREFLIGHT_ATTEMPTS:
                raise
            err.print(f"[yellow]retrying:[/] {exc}", highlight=False, soft_wrap=True)
            time.sleep(PREFLIGHT_DELAY_S * attempt)
    raise AssertionError("unreachable")


def prepare(config: Path, *, touch_vcenter: bool = True) -> str:
    """Validate the config and the vCenters, start/find the Prefect server; returns config.

    The check runs in its own opened environment, released after it: a driver that failed
    its login is never kept for the flow (which opens the environment again)."""
    from dpflow import prefect_server

    def check() -> None:
        from dpflow.environment import open_environment

        with open_environment(config) as env:
            if touch_vcenter:
                for vc in env.dc.vcenters:
                    env.hypervisor(vc.name).check()

    def go() -> str:
        preflight(check)
        prefect_server.ensure_server()
        return str(config.resolve())
    return guard(go)


class RichProgress:
    """dpflow.progress listener drawing one bar per disk copy."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), console=err,
                                 transient=True)
        self.ids: dict[str, Any] = {}

    def start(self, key: str, label: str, total: int) -> None:
        self.ids[key] = self.progress.add_task(label, total=total)

    def advance(self, key: str, amount: int) -> None:
        if key in self.ids:
            self.progress.advance(self.ids[key], amount)

    def finish(self, key: str) -> None:
        if key in self.ids:
            self.progress.remove_task(self.ids.pop(key))


def with_progress(fn: Callable[[], T]) -> T:
    from dpflow import progress

    bars = RichProgress()
    progress.subscribe(bars)
    try:
        with bars.progress:
            return fn()
    finally:
        progress.unsubscribe(bars)


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"

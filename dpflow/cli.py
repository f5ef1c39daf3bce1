"""`dpflow`: the administrator's command line over the flows.

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
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from dpflow.errors import DpflowError, UserError
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


def _guard(fn: Callable[[], T]) -> T:
    """Turn dpflow's errors into one line and an exit code."""
    try:
        return fn()
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except DpflowError as exc:
        err.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _prepare(config: Path, *, touch_vcenter: bool = True) -> str:
    """Validate the config and the vCenters, start/find the Prefect server; returns config."""
    from dpflow import prefect_server

    def go() -> str:
        from dpflow.environment import environment

        env = environment(config)
        if touch_vcenter:
            for vc in env.dc.vcenters:
                env.hypervisor(vc.name).check()
        prefect_server.ensure_server()
        return str(config.resolve())
    return _guard(go)


class RichProgress:
    """dpflow.progress listener drawing one bar per disk copy."""

    def __init__(self) -> None:
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


def _with_progress(fn: Callable[[], T]) -> T:
    from dpflow import progress

    bars = RichProgress()
    progress.subscribe(bars)
    try:
        with bars.progress:
            return fn()
    finally:
        progress.unsubscribe(bars)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@backup_app.command("vm")
def backup_vm(names: Annotated[list[str], typer.Argument(help="VM names")],
              config: ConfigOpt = DEFAULT_CONFIG,
              store: Annotated[str | None, typer.Option(help="store name")] = None) -> None:
    """Image backup of one or more VMs from a point-in-time snapshot."""
    cfg = _prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_image import backup_vms

        env = environment(cfg)
        env.store(store)  # unknown store, wrong or missing key: one line, nothing touched
        for n in names:
            env.locate_vm(n)  # unknown VM: one line before any snapshot is taken
        return _with_progress(lambda: backup_vms(cfg, names, store))
    results = _guard(go)
    table = Table("VM", "status", "version", "quiesced", "read", "added", "time", "note")
    for r in results:
        colour = {"completed": "green", "skipped": "yellow"}.get(r.status, "red")
        table.add_row(r.vm, f"[{colour}]{r.status}[/]", r.version_id or "-",
                      "-" if r.quiesced is None else ("yes" if r.quiesced else "no"),
                      _mb(r.bytes_read), _mb(r.bytes_added), f"{r.seconds:.1f}s", r.message)
    console.print(table)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@restore_app.command("vm")
def restore_vm(name: Annotated[str, typer.Argument(help="VM whose version to restore")],
               version: Annotated[str | None, typer.Option(help="version id (default: latest)")
                                  ] = None,
               as_name: Annotated[str | None, typer.Option("--as", help="restore as a new VM")
                                  ] = None,
               force: Annotated[bool, typer.Option(help="overwrite an existing VM's disks")
                                ] = False,
               power_on: Annotated[bool, typer.Option(help="power the VM on afterwards")
                                   ] = False,
               config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Full VM restore: a version as a new VM, or in place over a powered-off VM."""
    cfg = _prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_image import restore_vm_image

        cat = environment(cfg).catalog()
        row = cat.version(version) if version else cat.latest_version(name)
        if row.object.name != name:
            raise UserError(f"version {row.id} belongs to VM {row.object.name}, not {name}")
        return _with_progress(lambda: restore_vm_image(cfg, name, row.id, as_name, force,
                                                       power_on))
    r = _guard(go)
    console.print(f"[green]restored[/] {r.vm} version {r.version_id} as {r.target} "
                  f"({'new VM' if r.created else 'in place'}): {_mb(r.bytes_written)} written "
                  f"and verified bit for bit in {r.seconds:.1f}s"
                  + (", powered on" if r.powered_on else ""))


@app.command()
def versions(vm: Annotated[str | None, typer.Argument(help="only this VM")] = None,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List the catalogued versions."""
    def go() -> Any:
        from dpflow.environment import environment

        return environment(config).catalog().versions(vm)
    rows = _guard(go)
    table = Table("version", "VM", "created (UTC)", "store", "quiesced", "disks", "read",
                  "added", "note")
    for v in rows:
        table.add_row(v.id, v.object.name, v.created.strftime("%Y-%m-%d %H:%M:%S"), v.store,
                      "yes" if v.quiesced else "no", str(len(v.disks)), _mb(v.bytes_read),
                      _mb(v.bytes_added), v.note)
    console.print(table)


@app.command()
def replicate(group: Annotated[str, typer.Argument(help="LUN group (the catalogued object)")],
              luns: Annotated[list[str], typer.Argument(help="LUNs (virtual disk names)")],
              kind: Annotated[str | None, typer.Option(
                  help="snapshot | vsnap | snapclone | mirrorclone (default: the array's)")
              ] = None,
              keep: Annotated[int | None, typer.Option(help="replica sets kept (rotation)")
                              ] = None,
              policy: Annotated[str | None, typer.Option(
                  help="strict: fail if the kind cannot be made; loose: fall back")] = None,
              array: Annotated[str | None, typer.Option(help="array name (default: first)")
                               ] = None,
              config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Take a tracked replica set of LUNs on the array (one point in time), rotating old ones."""
    from flows.luns import plan_replicate

    plan = _guard(lambda: plan_replicate(str(config), group, luns, kind, keep, policy, array))
    cfg = _prepare(config, touch_vcenter=False)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.luns import replicate_luns

        drv = environment(cfg).array(plan.array)
        drv.check()
        known = {v.name for v in drv.list_vdisks()}
        missing = [n for n in plan.luns if n not in known]
        if missing:  # one line before any replica is made
            raise UserError(f"unknown LUN(s) {', '.join(missing)} on array {plan.array}")
        return replicate_luns(cfg, group, plan.luns, plan.kind.value, plan.keep, plan.policy,
                              plan.array)
    r = _guard(go)
    console.print(f"[green]replicated[/] {r.group}: {r.kind} set {r.replica_set}, version "
                  f"{r.version_id}, presented to the backup host as LUNs {r.presented_luns} "
                  f"and unpresented, {r.seconds:.1f}s"
                  + (f"; rotated away {', '.join(r.rotated)}" if r.rotated else "")
                  + (f"; note: {r.message}" if r.message else ""))


@restore_app.command("luns")
def restore_luns(group: Annotated[str, typer.Argument(help="LUN group to restore")],
                 replica: Annotated[str | None, typer.Option(
                     help="replica set name or version id (default: latest)")] = None,
                 detach_hosts: Annotated[bool, typer.Option(
                     help="unpresent the LUNs from their hosts for the restore, then present "
                          "them again")] = False,
                 config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Instant Recovery: the group's LUNs back to a replica set's point in time."""
    def check() -> Any:
        from dpflow.environment import environment

        return environment(config).catalog().replica_set(group, replica)
    _guard(check)  # unknown group or replica: one line, before any array call
    cfg = _prepare(config, touch_vcenter=False)

    def go() -> Any:
        from flows.luns import restore_luns_from_replica

        return restore_luns_from_replica(cfg, group, replica, detach_hosts)
    r = _guard(go)
    console.print(f"[green]restored[/] {r.group} ({', '.join(r.luns)}) from {r.kind} set "
                  f"{r.replica_set} (version {r.version_id}) in {r.seconds:.1f}s"
                  + (f"; detached and given back: {', '.join(r.detached)}" if r.detached
                     else ""))


@app.command()
def replicas(group: Annotated[str | None, typer.Argument(help="only this LUN group")] = None,
             all_: Annotated[bool, typer.Option("--all", help="also rotated-away sets")
                             ] = False,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List the catalogued replica sets (versions whose media is an array)."""
    def go() -> Any:
        from dpflow.environment import environment

        return environment(config).catalog().replica_sets(group, include_removed=all_)
    rows = _guard(go)
    table = Table("version", "group", "replica set", "kind", "array", "created (UTC)",
                  "status", "LUNs", "note")
    for r in rows:
        kind = r.kind if r.kind == r.requested_kind else f"{r.kind} (asked {r.requested_kind})"
        table.add_row(r.version_id, r.version.object.name, r.name, kind, r.array,
                      r.version.created.strftime("%Y-%m-%d %H:%M:%S"), r.status,
                      ", ".join(m.source for m in r.members), r.version.note)
    console.print(table)


@app.command()
def demo(workdir: Annotated[Path, typer.Option(help="where the demo data centre lives")
                            ] = Path(".dpflow/demo"),
         disk_mib: Annotated[int, typer.Option(help="size of each demo disk")] = 256) -> None:
    """Run the demo data centre end to end: backup, restore, verify, report."""
    from dpflow.demo import run_demo

    _guard(lambda: run_demo(workdir.resolve(), disk_mib, console))


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the local Prefect server and print its UI address."""
    from dpflow import prefect_server

    url = _guard(prefect_server.ensure_server)
    console.print(f"Prefect UI: {prefect_server.ui_url(url)}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by dpflow."""
    from dpflow import prefect_server

    console.print("stopped" if prefect_server.stop_server() else "no local server running")


import dpflow.cli_files  # noqa: E402,F401 - registers backup files, restore files, find
from dpflow import cli_media  # noqa: E402,F401 - registers verify/forget/prune/protect


def main() -> None:  # pragma: no cover - console entry
    app()


"""`dpflow backup vm`, `dpflow restore vm`, `dpflow versions`: the image path."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow_cli.app import (
    DEFAULT_CONFIG,
    ConfigOpt,
    app,
    backup_app,
    console,
    exit_for,
    guard,
    mb,
    prepare,
    restore_app,
    with_progress,
)


@backup_app.command("vm")
def backup_vm(names: Annotated[list[str], typer.Argument(help="VM names")],
              config: ConfigOpt = DEFAULT_CONFIG,
              store: Annotated[str | None, typer.Option(help="store name")] = None) -> None:
    """Image backup of one or more VMs from a point-in-time snapshot."""
    cfg = prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_image import backup_vms

        env = environment(cfg)
        # unknown store, wrong or missing key: one line, nothing touched
        env.store(store, create=True)
        for n in names:
            env.locate_vm(n)  # unknown VM: one line before any snapshot is taken
        return with_progress(lambda: backup_vms(cfg, names, store))
    results = guard(go)
    table = Table("VM", "status", "version", "quiesced", "read", "added", "time", "note")
    for r in results:
        colour = {"completed": "green", "skipped": "yellow", "partial": "yellow"}.get(
            r.status, "red")
        table.add_row(r.vm, f"[{colour}]{r.status}[/]", r.version_id or "-",
                      "-" if r.quiesced is None else ("yes" if r.quiesced else "no"),
                      mb(r.bytes_read), mb(r.bytes_added), f"{r.seconds:.1f}s", r.message)
    console.print(table)
    for r in results:
        for line in r.leftovers:
            console.print(f"[yellow]cleaned up:[/] {line}", highlight=False)
    exit_for([r.status for r in results])


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
    cfg = prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_image import plan_restore, restore_vm_image

        row, _ = plan_restore(environment(cfg), name, version)  # mistakes: one line, exit 2
        return with_progress(lambda: restore_vm_image(cfg, name, row.id, as_name, force,
                                                      power_on))
    r = guard(go)
    console.print(f"[green]restored[/] {r.vm} version {r.version_id} as {r.target} "
                  f"({'new VM' if r.created else 'in place'}): {mb(r.bytes_written)} written "
                  f"and verified bit for bit in {r.seconds:.1f}s"
                  + (", powered on" if r.powered_on else ""))


@app.command()
def versions(vm: Annotated[str | None, typer.Argument(help="only this VM")] = None,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List the catalogued versions."""
    def go() -> Any:
        from dpflow.environment import environment

        return environment(config).catalog().versions(vm)
    rows = guard(go)
    table = Table("version", "VM", "created (UTC)", "store", "quiesced", "disks", "read",
                  "added", "note")
    for v in rows:
        table.add_row(v.id, v.object.name, v.created.strftime("%Y-%m-%d %H:%M:%S"), v.store,
                      "yes" if v.quiesced else "no", str(len(v.disks)), mb(v.bytes_read),
                      mb(v.bytes_added), v.note)
    console.print(table)

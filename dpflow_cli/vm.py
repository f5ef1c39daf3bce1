"""`dpflow backup vm`, `dpflow restore vm`, `dpflow versions`: the image path."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow_cli.app import (
    DEFAULT_CONFIG,
    ConfigOpt,
    app,
    backup_app,
    console,
    err,
    exit_for,
    guard,
    mb,
    preflight,
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
        from flows.night import backup_vms
        from flows.vm_image import backup_one

        env = environment(cfg)
        # unknown store, wrong or missing key: one line, nothing touched
        env.store(store, create=True)
        for n in names:
            preflight(functools.partial(env.locate_vm, n))  # unknown VM: one line, no snapshot
        if len(names) == 1:  # no parent flow run around a single VM's
            return with_progress(lambda: [backup_one(cfg, names[0], store)])
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
               to_dir: Annotated[Path | None, typer.Option(
                   help="restore the disks as sparse image files <vm>-disk<N>.img into this "
                        "directory instead (no VM, no vCenter)")] = None,
               vcenter: Annotated[str | None, typer.Option(
                   help="restore to this vCenter or ESX host of the config (another site)")
               ] = None,
               datastore: Annotated[str | None, typer.Option(
                   help="datastore for the VM's files (default: the one it had)")] = None,
               host: Annotated[str | None, typer.Option(help="ESX host to place it on")
                               ] = None,
               network: Annotated[list[str] | None, typer.Option(
                   help="move NICs from network OLD to NEW (OLD=NEW, repeatable)")] = None,
               config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Full VM restore: a version as a new VM, or in place over a powered-off VM, here or
    at another site (--vcenter, --datastore, --host, --network); or its disks as image
    files (--to-dir)."""
    if to_dir is not None:
        restore_to_dir(name, version, to_dir, force, config)
        return
    nets = {}
    for pair in network or []:  # bad input: one line, before anything is touched
        old, sep, new = pair.partition("=")
        if not (sep and old and new):
            err.print(f"[bold red]error:[/] --network {pair!r}: write it OLD=NEW, e.g. "
                      "--network 'VM Network=DR Network'", soft_wrap=True)
            raise typer.Exit(2)
        nets[old] = new
    cfg = prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_image import plan_restore, restore_vm_image

        row, _ = plan_restore(environment(cfg), name, version)  # mistakes: one line, exit 2
        return with_progress(lambda: restore_vm_image(
            cfg, name, row.id, as_name, force, power_on, vcenter=vcenter, datastore=datastore,
            host=host, network_map=nets or None))
    r = guard(go)
    console.print(f"[green]restored[/] {r.vm} version {r.version_id} as {r.target} "
                  f"({'new VM' if r.created else 'in place'}): {mb(r.bytes_written)} written "
                  f"and verified bit for bit in {r.seconds:.1f}s"
                  + (", powered on" if r.powered_on else ""))
    for line in r.leftovers:
        console.print(f"[yellow]cleaned up:[/] {line}", highlight=False)


def restore_to_dir(name: str, version: str | None, to_dir: Path, force: bool,
                   config: Path) -> None:
    """A store operation: no Prefect server, no vCenter (like `restic restore`)."""
    import time

    def go() -> tuple[Any, int, float]:
        from dpflow.environment import environment
        from dpflow.errors import UserError
        from dpflow.image_file import check_target_dir, image_name, restore_disk_file
        from dpflow.progress import meter
        from dpflow.store.manifest import read_manifest

        t0 = time.perf_counter()
        env = environment(config)
        cat = env.catalog()
        row = cat.version(version) if version else cat.latest_version(name)
        if row.object.name != name:
            raise UserError(f"version {row.id} belongs to VM {row.object.name}, not {name}")
        store = env.store(row.store)
        manifest = read_manifest(store, row.id)
        names = [image_name(name, i) for i in range(len(manifest.disks))]
        check_target_dir(to_dir, names, force)
        written = 0
        for disk, file in zip(manifest.disks, names, strict=True):
            m = meter(f"restore:{file}", f"restore {file}", disk.capacity_bytes)
            try:
                written += restore_disk_file(store, disk, to_dir / file,
                                             workers=env.dc.proxies[0].workers, progress=m)
            finally:
                m.close()
        return row, written, time.perf_counter() - t0
    row, written, seconds = guard(lambda: with_progress(go))
    console.print(f"[green]restored[/] {name} version {row.id} to {to_dir}: "
                  f"{mb(written)} of data written (zeros left as holes), every chunk "
                  f"verified, in {seconds:.1f}s")


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

"""`dpflow instant-recover`: run a VM from its version in the store at once, or undo it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dpflow_cli.app import DEFAULT_CONFIG, ConfigOpt, app, console, guard, mb, prepare


@app.command("instant-recover")
def instant_recover(vm: Annotated[str | None, typer.Argument(help="VM whose version to run")
                                  ] = None,
                    version: Annotated[str | None, typer.Option(
                        help="version id (default: the latest)")] = None,
                    as_name: Annotated[str | None, typer.Option(
                        "--as", help="name of the recovered VM (default: <vm>-instant)")] = None,
                    abort: Annotated[str | None, typer.Option(
                        help="undo the instant recovery of this VM: nothing is left")] = None,
                    migrate: Annotated[str | None, typer.Option(
                        help="move this instantly recovered VM to production while it runs"
                        )] = None,
                    datastore: Annotated[str | None, typer.Option(
                        help="--migrate: the production datastore (default: the VM's own)"
                        )] = None,
                    network: Annotated[str | None, typer.Option(
                        help="the network for its NICs (default: the isolated network of "
                        "the restore tests)")] = None,
                    status: Annotated[bool, typer.Option(
                        "--status", help="show every instant recovery and whether its store "
                        "can be read")] = False,
                    config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Instant VM Recovery: the version published from the store as an NFS datastore, the
    VM registered on it and powered on in seconds; --migrate NAME moves it to production
    while it runs (Storage vMotion); --abort NAME removes it all; --status shows them."""
    from dpflow.errors import UserError

    if sum(x is not None for x in (vm, abort, migrate)) + status != 1:
        def refuse() -> None:
            raise UserError("give one of: a VM to recover, --migrate NAME, --abort NAME, "
                            "--status")
        guard(refuse)
    if status:
        _status(config)
        return
    cfg = prepare(config)
    if migrate is not None:
        def move() -> Any:
            from flows.instant import migrate_instant_recovery
            from tasks.instant import load

            load(migrate)  # unknown name: one line
            return migrate_instant_recovery(cfg, migrate, datastore)
        m = guard(move)
        console.print(f"[green]migrated[/] {m.name} to datastore {m.datastore} while running "
                      f"({mb(m.disk_bytes)} of disks) in {m.seconds:.1f}s; the published "
                      f"version is unmounted, its overlay dropped", highlight=False)
        return
    if abort is not None:
        def undo() -> Any:
            from flows.instant import abort_instant_recovery
            from tasks.instant import load

            load(abort)  # unknown name: one line
            return abort_instant_recovery(cfg, abort)
        guard(undo)
        console.print(f"[green]aborted[/] {abort}: VM, datastore, published version and "
                      f"overlay removed; the store is unchanged", highlight=False)
        return

    def go() -> Any:
        from dpflow.environment import environment
        from flows.instant import instant_recover_vm
        from flows.vm_image import plan_restore
        from tasks.instant import check_tools

        check_tools()
        assert vm is not None
        env = environment(cfg)
        row, _ = plan_restore(env, vm, version)  # mistakes: one line, exit 2
        name = as_name or f"{vm}-instant"
        if env.hypervisor(env.dc.vcenters[0].name).vm_exists(name):
            raise UserError(f"a VM named '{name}' already exists: choose another --as name")
        if network:
            from tasks.instant import check_network

            check_network(env, env.dc.vcenters[0].name, network)
        return instant_recover_vm(cfg, vm, row.id, as_name, network)
    r = guard(go)
    console.print(f"[green]running[/] {r.name} from version {r.version_id} of {r.vm} "
                  f"({mb(r.disk_bytes)} of disks, nothing copied) on datastore {r.datastore}, "
                  f"host {r.host}: powered on {r.seconds_to_power_on:.1f}s after the start; "
                  f"`dpflow instant-recover --abort {r.name}` removes it", highlight=False)


def _status(config: Path) -> None:
    """One line per instant recovery; exit 1 when a store cannot be read."""
    def go() -> list[dict[str, object]]:
        from dpflow.environment import environment
        from tasks.instant import health, recoveries

        env = environment(config)
        return [health(env, s) for s in recoveries()]
    rows = guard(go)
    if not rows:
        console.print("no instant recovery is running", highlight=False)
    trouble = False
    for h in rows:
        ok = h["store"] == "ok" and h["server"] == "running" and h["mounted"]
        trouble = trouble or not ok
        colour = "green" if ok else "bold red"
        console.print(f"[{colour}]{h['name']}[/] from version {h['version']} of {h['vm']} on "
                      f"datastore {h['datastore']}: server {h['server']}, "
                      f"{'mounted' if h['mounted'] else 'NOT mounted'}, store: {h['store']}",
                      highlight=False, soft_wrap=True)
    if trouble:
        raise typer.Exit(1)

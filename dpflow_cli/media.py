"""`dpflow verify | forget | prune | protect`: media management commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow_cli.app import DEFAULT_CONFIG, ConfigOpt, app, console, err, guard, prepare

StoreOpt = Annotated[str | None, typer.Option(help="store name (default: the first)")]


@app.command()
def verify(read_data: Annotated[float, typer.Option(
               "--read-data", min=0, max=100,
               help="also read, decrypt and hash this percentage of chunks (100 = all)")] = 0.0,
           store: StoreOpt = None, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check that every catalogued version has its manifest and its chunks (and read some or
    all of them); exit 1 naming each version that cannot be restored."""
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from dpflow.store.maintenance import StoreDamaged
        from flows.maintenance import verify_media

        try:
            return verify_media(cfg, store, read_data)
        except StoreDamaged as exc:
            return exc.report
    r = guard(go)
    console.print(f"{r.versions} version(s), {r.chunks_checked:,} chunks checked, "
                  f"{r.chunks_read:,} read and hashed")
    for vid in r.uncatalogued:
        console.print(f"[yellow]note:[/] manifest {vid} has no catalog row (a backup stopped "
                      f"between the two); prune keeps its chunks", highlight=False)
    if r.ok:
        console.print("[green]store is sound[/]")
        return
    table = Table("version that cannot be restored", "why")
    for vid, why in r.unrestorable.items():
        table.add_row(vid, why)
    console.print(table)
    if r.damaged:
        table = Table("damaged chunk", "why", "versions it breaks")
        for cid, versions in r.damaged.items():
            table.add_row(cid[:16], r.errors[cid], ", ".join(versions))
        console.print(table)
    err.print(f"[bold red]failed:[/] store damaged: {len(r.unrestorable)} of {r.versions} "
              f"version(s) cannot be restored", highlight=False)
    raise typer.Exit(1)


@app.command()
def forget(vm: Annotated[str | None, typer.Argument(help="only this VM")] = None,
           keep_last: Annotated[int, typer.Option(min=0)] = 0,
           keep_daily: Annotated[int, typer.Option(min=0)] = 0,
           keep_weekly: Annotated[int, typer.Option(min=0)] = 0,
           keep_monthly: Annotated[int, typer.Option(min=0)] = 0,
           apply: Annotated[bool, typer.Option(help="really forget (default: dry run)")
                            ] = False,
           store: StoreOpt = None, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Forget versions no keep rule and no protection time holds (dry run by default)."""
    from dpflow.retention import KeepPolicy

    policy = KeepPolicy(last=keep_last, daily=keep_daily, weekly=keep_weekly,
                        monthly=keep_monthly)
    if policy.empty:
        err.print("[bold red]error:[/] no keep rule given: that would forget every unprotected "
                  "version; give at least one --keep-… option", soft_wrap=True)
        raise typer.Exit(2)
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from flows.maintenance import forget_versions

        return forget_versions(cfg, policy, vm, store, apply)
    plan = guard(go)
    table = Table("object", "version", "decision", "why")
    for obj, decisions in plan.items():
        for vid, reasons in decisions.items():
            table.add_row(obj, vid, "keep" if reasons else
                          ("[red]forgotten[/]" if apply else "[yellow]would forget[/]"),
                          ", ".join(reasons))
    console.print(table)
    if not apply:
        console.print("dry run: nothing was forgotten; add --apply, then `dpflow prune`")


@app.command()
def prune(apply: Annotated[bool, typer.Option(help="really delete (default: dry run)")] = False,
          store: StoreOpt = None, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Delete the packs no version references (never while a backup runs)."""
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from flows.maintenance import prune_media

        return prune_media(cfg, store, apply)
    r = guard(go)
    for line in r.leftover_sessions:
        console.print(f"[yellow]{'closed' if apply else 'would close'} as aborted:[/] {line}",
                      highlight=False)
    for name, size in r.temp_removed + r.unindexed_removed:
        console.print(f"{'removed' if apply else 'would remove'} leftover {name} "
                      f"({size:,} bytes)", highlight=False)
    if r.deferred_by:
        console.print(f"[yellow]prune deferred[/]: backup session(s) {', '.join(r.deferred_by)} "
                      f"running; no pack deleted")
        raise typer.Exit(3)
    verb = "deleted" if apply else "would delete"
    console.print(f"{verb} {r.packs_deleted} pack(s): {r.chunks_freed:,} chunks, "
                  f"{r.bytes_freed / 1e6:,.1f} MB; {r.packs_kept_partly_unused} pack(s) kept "
                  f"that still hold referenced chunks")


@app.command()
def protect(version: Annotated[str, typer.Argument(help="version id")],
            days: Annotated[int, typer.Option(min=0, help="protect for N days from now "
                                              "(0 = remove protection)")] = 30,
            config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Set a version's protection time: forget never removes it before then."""
    def go() -> Any:
        from dpflow.environment import environment

        until = datetime.now(UTC) + timedelta(days=days) if days else None
        environment(config).catalog().protect(version, until)
        return until
    until = guard(go)
    console.print(f"version {version} " + (f"protected until {until:%Y-%m-%d %H:%M} UTC"
                                           if until else "no longer protected"))



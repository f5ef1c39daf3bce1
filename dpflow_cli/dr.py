"""`dpflow failover`, `dpflow failback`, `dpflow dr status|protect`: Continuous Access sites.

--dry-run prints the ordered plan from the data-centre file alone: no array is asked and
no Prefect server is started. A group that fails is printed with the array's words and
the command exits 1; the others were still done.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow_cli.app import DEFAULT_CONFIG, ConfigOpt, app, console, err, guard, prepare

dr_app = typer.Typer(help="Continuous Access DR groups.", no_args_is_help=True)
app.add_typer(dr_app, name="dr")

GroupOpt = Annotated[list[str] | None, typer.Option("--group", "-g",
                                                    help="only this DR group (repeatable)")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="print the ordered plan, touch nothing")]


def _print_plan(plan: list[str]) -> None:
    for i, line in enumerate(plan, 1):
        console.print(f"{i:3d}. {line}", highlight=False)


def _report(res: Any) -> None:
    for g in res.groups:
        colour = {"done": "green", "already done": "cyan", "failed": "red"}.get(g.status, "")
        rpo = ""
        if g.writes_held is not None:
            rpo = f" holds {g.writes_held} writes"
            rpo += f", lost {g.writes_lost}" if g.writes_lost is not None else ", lost unknown"
        console.print(f"[{colour}]{g.status}[/] {g.group}:{rpo} {g.message}", highlight=False)
    if getattr(res, "vms", None):
        table = Table("VM", "DR group", "priority", "status", "networks", "up at", "message")
        for v in res.vms:
            colour = {"up": "green", "failed": "red"}.get(v.status, "yellow")
            table.add_row(v.vm, v.group, str(v.priority), f"[{colour}]{v.status}[/]",
                          ", ".join(v.networks),
                          "" if v.up_at_s is None else f"{v.up_at_s:.1f}s", v.message[:80])
        console.print(table)
    console.print(f"{res.action} to site {res.site}: {res.seconds:.1f}s")
    if not res.ok:
        raise typer.Exit(1)


@app.command()
def failover(site: Annotated[str, typer.Argument(help="the site to bring the DR groups up at")],
             unplanned: Annotated[bool, typer.Option(
                 "--unplanned", help="the source site is lost: fail over what this site "
                 "holds and report the writes lost")] = False,
             test: Annotated[bool, typer.Option(
                 "--test", help="test failover: a writable snapshot at the site, checked, "
                 "discarded; replication untouched")] = False,
             dry_run: DryOpt = False, group: GroupOpt = None,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Fail the DR groups that replicate to SITE over to it (planned by default)."""
    from dpflow.environment import environment
    from flows import site_failover as sf

    if test and unplanned:
        err.print("[bold red]error:[/] --test and --unplanned exclude each other: a test "
                  "failover never touches the source; drop one of them", soft_wrap=True)
        raise typer.Exit(2)
    plan = guard(lambda: sf.test_failover_plan(environment(config), site, group) if test
                 else sf.failover_plan(environment(config), site, not unplanned, group))
    if dry_run:
        _print_plan(plan)
        return
    cfg = prepare(config, touch_vcenter=False)
    if test:
        _report(guard(lambda: sf.test_failover(cfg, site, groups=group)))
    else:
        _report(guard(lambda: sf.failover_site(cfg, site, planned=not unplanned, groups=group)))


@app.command()
def failback(site: Annotated[str, typer.Argument(help="the home site to return to")],
             dry_run: DryOpt = False, group: GroupOpt = None,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Return the DR groups whose home is SITE (no sooner than 15 min after a failover)."""
    from dpflow.environment import environment
    from flows import site_failover as sf

    plan = guard(lambda: sf.failback_plan(environment(config), site, group))
    if dry_run:
        _print_plan(plan)
        return
    cfg = prepare(config, touch_vcenter=False)
    _report(guard(lambda: sf.failback_site(cfg, site, groups=group)))


@dr_app.command("status")
def status(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Every DR group as each site's array sees it: role, mode, state, log, lag."""
    from flows.dr_admin import dr_status

    cfg = prepare(config, touch_vcenter=False)
    sites = guard(lambda: dr_status(cfg))
    table = Table("site", "array", "DR group", "role", "home", "mode", "state", "log",
                  "lag", "to copy", "writes", "failovers")
    for s in sites:
        if not s.reachable:
            table.add_row(s.site, s.array, "-", "[red]unreachable[/]", "", "", s.message[:60])
            continue
        for g in s.groups:
            log = f"{g.log_bytes / 2**20:.0f}/{g.log_capacity / 2**20:.0f} MiB"
            table.add_row(s.site, s.array, g.name, g.role.value, g.home, g.mode.value,
                          g.state + (" (failsafe)" if g.failsafe else ""), log,
                          f"{g.lag_ms / 1000:.1f}s", f"{g.pending_blocks} blocks",
                          str(g.writes_applied), str(g.generation))
    console.print(table)


@dr_app.command("protect")
def protect(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Create the DR groups of the data-centre file that do not exist yet."""
    from flows.dr_admin import protect as protect_flow

    cfg = prepare(config, touch_vcenter=False)
    for g in guard(lambda: protect_flow(cfg)):
        console.print(f"[green]protected[/] {g.name}: {', '.join(m.local for m in g.members)} "
                      f"{g.local_array} → {g.remote_array} ({g.mode.value}, {g.state})")

"""`dpflow replicate`, `dpflow restore luns`, `dpflow replicas`: array replicas."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow.errors import UserError
from dpflow_cli.app import (
    DEFAULT_CONFIG,
    ConfigOpt,
    app,
    console,
    guard,
    preflight,
    prepare,
    restore_app,
)


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
    from dpflow.environment import environment
    from flows.luns import plan_replicate

    plan = guard(lambda: plan_replicate(environment(config), group, luns, kind, keep, policy,
                                        array))
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.luns import replicate_luns

        drv = environment(cfg).array(plan.array)
        preflight(drv.check)
        known = {v.name for v in preflight(drv.list_vdisks)}
        missing = [n for n in plan.luns if n not in known]
        if missing:  # one line before any replica is made
            raise UserError(f"unknown LUN(s) {', '.join(missing)} on array {plan.array}")
        return replicate_luns(cfg, group, plan.luns, plan.kind.value, plan.keep, plan.policy,
                              plan.array)
    r = guard(go)
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
    guard(check)  # unknown group or replica: one line, before any array call
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from flows.luns import restore_luns_from_replica

        return restore_luns_from_replica(cfg, group, replica, detach_hosts)
    r = guard(go)
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
    rows = guard(go)
    table = Table("version", "group", "replica set", "kind", "array", "created (UTC)",
                  "status", "LUNs", "note")
    for r in rows:
        kind = r.kind if r.kind == r.requested_kind else f"{r.kind} (asked {r.requested_kind})"
        table.add_row(r.version_id, r.version.object.name, r.name, kind, r.array,
                      r.version.created.strftime("%Y-%m-%d %H:%M:%S"), r.status,
                      ", ".join(m.source for m in r.members), r.version.note)
    console.print(table)

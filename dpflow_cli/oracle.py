"""`dpflow backup oracle DB`, `dpflow recover oracle DB`: Zero Downtime Backup and Instant
Recovery of an Oracle database on array replicas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow.errors import UserError
from dpflow_cli.app import (
    DEFAULT_CONFIG,
    ConfigOpt,
    app,
    backup_app,
    console,
    guard,
    preflight,
    prepare,
)

recover_app = typer.Typer(help="Recover applications to a point in time.",
                          no_args_is_help=True)
app.add_typer(recover_app, name="recover")


@backup_app.command("oracle")
def backup_oracle(db: Annotated[str, typer.Argument(help="database name (config 'databases')")],
                  kind: Annotated[str | None, typer.Option(
                      help="snapshot | vsnap | snapclone | mirrorclone")] = None,
                  keep: Annotated[int | None, typer.Option(help="replicas kept (rotation)")
                                  ] = None,
                  policy: Annotated[str | None, typer.Option(help="strict | loose")] = None,
                  to_media: Annotated[bool, typer.Option(
                      help="also read the replica's LUNs into the store (ZDB to disk+tape)")
                  ] = False,
                  config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Zero Downtime Backup: backup mode for seconds, a replica of the datafile LUNs,
    archived logs and a backup control file to the store."""
    from dpflow.environment import environment
    from flows.oracle import plan_zdb

    guard(lambda: plan_zdb(environment(config), db, kind, keep, policy))
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.oracle import backup_oracle_zdb

        preflight(environment(cfg).database(db).check)  # login and name: one line, before the array
        return backup_oracle_zdb(cfg, db, kind, keep, policy, to_media=to_media)
    r = guard(go)
    console.print(f"[green]backed up[/] {r.database}: {r.kind} replica {r.replica_set} of "
                  f"{', '.join(r.luns)}, backup mode {r.backup_mode_seconds:.1f}s (SCN "
                  f"{r.begin_scn}-{r.end_scn}), {r.logs} archived log(s) and the control file "
                  f"stored{', LUN images stored' if r.media_version_id else ''}, version "
                  f"{r.version_id}, {r.seconds:.1f}s"
                  + (f"; rotated away {', '.join(r.rotated)}" if r.rotated else "")
                  + (f"; note: {r.message}" if r.message else ""))


def parse_until(text: str | None) -> tuple[int | None, datetime | None]:
    """An SCN (digits) or a time (ISO 8601; UTC unless it carries an offset)."""
    if text is None:
        return None, None
    if text.isdigit():
        return int(text), None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"bad --until '{text}': give an SCN (digits) or a time such as "
                        f"2026-12-03T10:15:00") from None
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return None, t


@recover_app.command("oracle")
def recover_oracle(db: Annotated[str, typer.Argument(help="database name")],
                   replica: Annotated[str | None, typer.Option(
                       help="replica name or version id (default: the latest)")] = None,
                   until: Annotated[str | None, typer.Option(
                       help="point in time: an SCN or a time (UTC); default: complete")] = None,
                   shutdown: Annotated[bool, typer.Option(
                       help="shut the database down if it is open")] = False,
                   from_media: Annotated[bool, typer.Option(
                       help="restore the datafile LUNs from their images in the store (when "
                            "the replica is gone)")] = False,
                   list_: Annotated[bool, typer.Option(
                       "--list", help="list what can be recovered, to which point")] = False,
                   config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Instant Recovery: datafile LUNs back to a replica, recovered, opened."""
    from dpflow.catalog_oracle import oracle_backup, oracle_backups
    from dpflow.environment import environment

    if list_:
        rows = guard(lambda: (environment(config).dc.database(db),
                              oracle_backups(environment(config).catalog(), db))[1])
        t = Table()
        t.add_column("replica", no_wrap=True)
        for col in ("kind", "held on", "taken (UTC)", "backup mode SCNs", "recover to"):
            t.add_column(col)
        for ob, rs in rows:
            held = [w for w, ok in (("array", rs.status == "available"),
                                    ("media", bool(ob.media_version_id))) if ok]
            t.add_row(rs.name, rs.kind, ", ".join(held) or "-",
                      f"{ob.version.created:%Y-%m-%d %H:%M:%S}", f"{ob.begin_scn}-{ob.end_scn}",
                      f"now, or SCN >= {ob.end_scn}")
        console.print(t)
        return
    scn, when = guard(lambda: parse_until(until))
    guard(lambda: (environment(config).dc.database(db),
                   oracle_backup(environment(config).catalog(), db, replica, from_media)))
    cfg = prepare(config, touch_vcenter=False)

    def go() -> Any:
        from flows.oracle import instant_recover_oracle
        from flows.oracle_media import restore_oracle_from_media

        if from_media:
            return restore_oracle_from_media(cfg, db, replica, scn, when, shutdown)
        return instant_recover_oracle(cfg, db, replica, scn, when, shutdown)
    r = guard(go)
    source = "media" if from_media else f"replica {r.replica_set}"
    console.print(f"[green]recovered[/] {r.database} from {source} "
                  f"({r.point}{', RESETLOGS' if r.resetlogs else ''}): open at SCN {r.scn}; "
                  f"LUNs restored in {r.restore_seconds:.1f}s, {r.seconds:.1f}s in all")

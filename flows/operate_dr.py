"""Oracle Zero Downtime Backup, its recoveries, and site failover as an operator starts
them from the Prefect UI: flat, typed parameters (str, int, bool, Literal: the UI
mishandles unions and None defaults), the replica or media backup chosen at run time
from what the catalog holds now (flows.restore_point), then the path's own flow as a
subflow. An empty string or 0 means "not given" (the data-centre file's setting).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from prefect import flow

from dpflow.errors import UserError
from flows.restore_point import Choice, ask

ReplicaKindChoice = Literal["configured", "snapshot", "vsnap", "snapclone", "mirrorclone"]
FailoverAction = Literal["planned failover", "unplanned failover", "test failover", "failback"]


def _until(until_scn: int, until_time: str) -> tuple[int | None, datetime | None]:
    if until_scn and until_time:
        raise UserError("give until_scn or until_time, not both")
    if until_scn < 0:
        raise UserError(f"until_scn {until_scn} is negative: give an SCN, or 0 for complete")
    try:
        when = datetime.fromisoformat(until_time) if until_time else None
    except ValueError:
        raise UserError(f"until_time '{until_time}' is not a date and time: write it as "
                        f"2026-12-03 01:30:00") from None
    return until_scn or None, when


def _backup_choice(dc: str, db: str, which: str, on_media: bool) -> str:
    """The replica set name (or media version id) to recover from: named, latest or asked."""
    from dpflow.catalog_oracle import oracle_backup, oracle_backups
    from dpflow.environment import environment

    catalog = environment(dc).catalog()
    if which != "ask":
        o, r = oracle_backup(catalog, db, None if which == "latest" else which, on_media)
        return o.version_id if on_media else r.name
    rows = [(o, r) for o, r in oracle_backups(catalog, db)
            if (o.media_version_id if on_media else r.status == "available")]
    if not rows:
        oracle_backup(catalog, db, None, on_media)  # raises the one-line NotFound
    vid = ask(db.upper(), [Choice(version_id=o.version_id, created=o.version.created,
                                  note=f"{r.name} ({r.kind}), SCN {o.end_scn}")
                           for o, r in rows])
    return next(o.version_id if on_media else r.name for o, r in rows if o.version_id == vid)


@flow(name="oracle-zdb", log_prints=True)
def oracle_zdb(db: str, kind: ReplicaKindChoice = "configured", keep: int = 0,
               to_media: bool = False, dc: str = "default") -> dict:
    """Zero Downtime Backup of an Oracle database: seconds in backup mode, an array replica.

    Args:
        db: the database name, as under `databases:` in the data-centre file
        kind: the replica kind; `configured`: the database's or array's setting
        keep: replica sets kept (rotation); 0: the configured number
        to_media: also copy the replica's LUNs into the store
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.oracle import backup_oracle_zdb

    if keep < 0:
        raise UserError(f"keep {keep} is negative: give a number of replica sets, or 0")
    return backup_oracle_zdb(dc, db, None if kind == "configured" else kind, keep or None,
                             to_media=to_media).model_dump()


@flow(name="oracle-instant-recovery", log_prints=True)
def oracle_instant_recovery(db: str, replica: str = "ask", until_scn: int = 0,
                            until_time: str = "", shutdown_open: bool = False,
                            dc: str = "default") -> dict:
    """Instant Recovery of an Oracle database from a replica still on the array.

    Args:
        db: the database name
        replica: `ask` (the run offers the replicas on the array now), `latest`, or a
            replica set name
        until_scn: recover up to this SCN (then OPEN RESETLOGS); 0: complete recovery
        until_time: recover up to this time, e.g. 2026-12-03 01:30:00; empty: complete
        shutdown_open: shut the database down if it is open (else an open one is refused)
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.oracle import instant_recover_oracle

    scn, when = _until(until_scn, until_time)
    name = _backup_choice(dc, db, replica, on_media=False)
    return instant_recover_oracle(dc, db, name, scn, when, shutdown_open).model_dump()


@flow(name="oracle-restore-from-media", log_prints=True)
def oracle_restore_from_media(db: str, version: str = "ask", until_scn: int = 0,
                              until_time: str = "", shutdown_open: bool = False,
                              dc: str = "default") -> dict:
    """An Oracle database's datafile LUNs back from their images in the store, recovered.

    Args:
        db: the database name
        version: `ask` (the run offers the backups with LUN images now), `latest`, or a
            version id
        until_scn: recover up to this SCN (then OPEN RESETLOGS); 0: complete recovery
        until_time: recover up to this time, e.g. 2026-12-03 01:30:00; empty: complete
        shutdown_open: shut the database down if it is open (else an open one is refused)
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.oracle_media import restore_oracle_from_media

    scn, when = _until(until_scn, until_time)
    vid = _backup_choice(dc, db, version, on_media=True)
    return restore_oracle_from_media(dc, db, vid, scn, when, shutdown_open).model_dump()


@flow(name="site-failover", log_prints=True)
def site_failover(site: str, action: FailoverAction = "planned failover",
                  dry_run: bool = True, groups: str = "", dc: str = "default") -> dict:
    """Site failover, test failover or failback of the DR groups of a site.

    Args:
        site: the site that takes over (failover, test) or gets its groups back (failback)
        action: planned (waits for the groups to be in sync), unplanned (the other site
            is lost), test (copies at the remote site, replication goes on), failback
        dry_run: only plan: list what would be done, touch nothing (on by default)
        groups: DR groups to act on, comma-separated; empty: every group of the site
        dc: the registered data centre (`dpflow dc list`)
    """
    from flows.site_failover import failback_site, failover_site, test_failover

    only = [g.strip() for g in groups.split(",") if g.strip()] or None
    if action == "failback":
        res = failback_site(dc, site, dry_run, only)
    elif action == "test failover":
        res = test_failover(dc, site, dry_run, only)
    else:
        res = failover_site(dc, site, action == "planned failover", dry_run, only)
    return res.model_dump()

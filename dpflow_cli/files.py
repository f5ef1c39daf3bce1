"""`dpflow backup files`, `dpflow find`, `dpflow restore files`: file-level commands.

Registered on the Typer apps of dpflow_cli.app when dpflow_cli.main imports this module. Bad input
is one line and exit code 2, checked from the catalog and the target directory before
any snapshot is taken or file read.
"""

from __future__ import annotations

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
    exit_for,
    guard,
    mb,
    preflight,
    prepare,
    restore_app,
)

default_config = DEFAULT_CONFIG

@backup_app.command("files")
def backup_files(
    vm: Annotated[str, typer.Argument(help="VM whose guest files to back up")],
    level: Annotated[str, typer.Option(help="full | incr (since the last backup) | "
                                       "diff (since the last full)")] = "full",
    include: Annotated[list[str] | None, typer.Option(
        help="[VOLUME:]PATH pattern to take (repeatable; default all)")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        help="[VOLUME:]PATH pattern to leave out (repeatable)")] = None,
    full_if_needed: Annotated[bool, typer.Option(
        help="run a full when an incr/diff has no earlier full")] = False,
    store: Annotated[str | None, typer.Option(help="store name")] = None,
    config: ConfigOpt = default_config,
) -> None:
    """File-level backup of a VM's guest file systems (NTFS, ext) from a snapshot."""
    def check() -> None:
        from dpflow.environment import environment
        from tasks.filebackup import plan_level

        plan_level(environment(config), vm, level, store, full_if_needed)
        environment(config).dc.store(store)
    guard(check)
    cfg = prepare(config)

    def go() -> Any:
        from dpflow.environment import environment
        from flows.vm_files import backup_vm_files

        preflight(lambda: environment(cfg).locate_vm(vm))  # unknown VM: one line, no snapshot
        return backup_vm_files(cfg, vm, level, include, exclude, store, full_if_needed)
    r = guard(go)
    vols = ", ".join(f"{v['name']}={v['fs_type'] or 'unreadable'}" for v in r.volumes)
    colour = "green" if r.status == "completed" else "yellow"
    console.print(f"[{colour}]{r.status}[/] {r.level} file backup of {r.vm}: version "
                  f"{r.version_id}, {r.files:,} objects, {r.files_read:,} files read "
                  f"({mb(r.bytes_read)}), {mb(r.bytes_added)} added, {r.seconds:.1f}s "
                  f"[{vols}]")
    for p in r.problems:
        console.print(f"[yellow]warning:[/] {p}", highlight=False)
    for line in r.leftovers:
        console.print(f"[yellow]cleaned up:[/] {line}", highlight=False)
    if r.problems:
        console.print(f"[yellow]{len(r.problems)} problem(s) in all[/]")
    exit_for([r.status])

@app.command()
def find(
    vm: Annotated[str, typer.Argument(help="VM")],
    pattern: Annotated[str, typer.Argument(help="[VOLUME:]PATH pattern, e.g. '*.conf'")],
    version: Annotated[str | None, typer.Option(
        help="file-level version (default: the latest)")] = None,
    config: ConfigOpt = default_config,
) -> None:
    """Files of a VM's file-level version, from the catalog."""
    def go() -> Any:
        from dpflow.environment import environment
        from tasks.guestfiles import select_catalogued

        return select_catalogued(environment(config), vm, [pattern], version)
    version_id, rows = guard(go)
    table = Table("volume", "path", "kind", "size", "modified (UTC)", "mode/attr",
                  "owner", title=f"{vm} version {version_id}")
    from datetime import UTC, datetime

    for r in rows:
        when = datetime.fromtimestamp(r.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        ma = oct(r.mode) if r.mode is not None else (
            f"0x{r.attributes:x}" if r.attributes is not None else "-")
        table.add_row(r.volume, r.path + (f" -> {r.target}" if r.target else ""), r.kind,
                      f"{r.size:,}", when, ma, r.owner or "-")
    console.print(table)

SHOWN = 20  # lines per kind on the terminal; the totals and the artifact have them all


@restore_app.command("files")
def restore_files(
    vm: Annotated[str, typer.Argument(help="VM")],
    patterns: Annotated[list[str], typer.Argument(help="[VOLUME:]PATH patterns")],
    to: Annotated[Path | None, typer.Option("--to", help="directory on this proxy")] = None,
    into_guest: Annotated[str | None, typer.Option(
        help="directory inside the running guest (vSphere guest operations)")] = None,
    guest_user: Annotated[str | None, typer.Option(help="guest account")] = None,
    guest_password_env: Annotated[str | None, typer.Option(
        help="environment variable holding the guest password")] = None,
    version: Annotated[str | None, typer.Option(help="version (default: latest)")] = None,
    conflict: Annotated[str, typer.Option(help="skip | overwrite | rename")] = "skip",
    from_image: Annotated[bool, typer.Option(
        help="restore out of an image version (read lazily)")] = False,
    config: ConfigOpt = default_config,
) -> None:
    """Restore files of a file-level (or image) version to a directory, or into the guest."""
    def check() -> str | None:
        from dpflow.environment import environment
        from dpflow.errors import UserError
        from dpflow.guestfs import SafeTarget
        from dpflow.guestfs.target import CONFLICTS
        from tasks.guestfiles import image_version_of, select_catalogued

        if conflict not in CONFLICTS:
            raise UserError(f"unknown conflict policy '{conflict}': use one of "
                            f"{', '.join(CONFLICTS)}")
        if (to is None) == (into_guest is None):
            raise UserError("give exactly one of --to DIR (on this proxy) or --into-guest DIR")
        if into_guest is not None:
            from tasks.guestfiles import guest_password

            if from_image:
                raise UserError("--into-guest restores from file-level versions only")
            guest_password(guest_user, guest_password_env)
        vid = (image_version_of(environment(config), vm, version) if from_image
               else select_catalogued(environment(config), vm, patterns, version)[0])
        if to is not None:
            from tasks.guestfiles import check_restore_target

            check_restore_target(environment(config), to)
            SafeTarget(to).close()
        return vid
    vid = guard(check)
    cfg = prepare(config, touch_vcenter=into_guest is not None)

    def go() -> Any:
        from flows.vm_files import (
            restore_files_from_image,
            restore_vm_files,
            restore_vm_files_into_guest,
        )

        if into_guest is not None:
            return restore_vm_files_into_guest(cfg, vm, into_guest, patterns, vid, conflict,
                                               guest_user, guest_password_env)
        assert to is not None  # check() demanded exactly one of --to / --into-guest
        run = restore_files_from_image if from_image else restore_vm_files
        return run(cfg, vm, str(to.resolve()), patterns, vid, conflict)
    r = guard(go)
    src = (f", read {mb(r.source_bytes_read)} of a {mb(r.image_bytes)} image"
           if r.source == "image" else "")
    console.print(f"[green]restored[/] {r.restored} object(s) of {vm} version {r.version_id} "
                  f"to {r.target}: {mb(r.bytes_written)} in {r.seconds:.1f}s{src}")
    for what, items in (("skipped (exists)", r.skipped), ("renamed", r.renamed),
                        ("refused", r.refused), ("failed", r.failed),
                        ("removed leftover", r.leftovers)):
        for i in items[:SHOWN]:
            console.print(f"[yellow]{what}:[/] {i}", highlight=False)
        if len(items) > SHOWN:
            console.print(f"[yellow]{what}:[/] ... and {len(items) - SHOWN} more (all of them "
                          f"in the flow run's artifact)", highlight=False)
    console.print(f"totals: {r.totals()}", highlight=False)
    exit_for(["partial"] if r.failed or r.refused else [])  # something listed was not restored

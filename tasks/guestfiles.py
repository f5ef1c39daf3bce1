"""File-level restore steps: files restored from a file-level version or straight out of
an image version, to a directory or into the running guest. (Backup: tasks/filebackup.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from dpflow.environment import Environment
from dpflow.errors import NotFound, TransientError, UserError
from dpflow.guestfs import ImageDisk, RangeFile, SafeTarget, discover, split_path
from dpflow.guestfs.restore import (
    FileRestore,
    Restorer,
    catalogued_blocks,
    mode_of,
    restore_volume,
)
from dpflow.guestfs.select import Selection
from dpflow.store.manifest import read_manifest
from tasks.common import step


# --- restore ------------------------------------------------------------------------------
def select_catalogued(env: Environment, vm: str, patterns: list[str], version: str | None
                      ) -> tuple[str, list[Any]]:
    """(version id, file rows) a restore or find takes; UserError when nothing matches."""
    cat = env.catalog()
    if version is None:
        sets = cat.file_sets(vm)
        if not sets:
            raise NotFound(f"no file-level version of VM '{vm}': `dpflow backup files {vm}` "
                           f"takes one")
        version = sets[-1].version_id
    fs = cat.file_set(version)
    if fs.version.object.name != vm:
        raise UserError(f"version {version} belongs to VM {fs.version.object.name}, not {vm}")
    sel = Selection(patterns)
    rows = [r for r in cat.files(version) if sel.takes(r.volume, r.path)]
    if not rows:
        raise UserError(f"nothing in version {version} of {vm} matches "
                        f"{' '.join(patterns)!r}: `dpflow find {vm} '*'` lists its files")
    return version, rows


@step(name="restore guest files", retries=1)
def restore_catalogued_files(env: Environment, vm: str, version: str, patterns: list[str],
                             target: str, conflict: str) -> FileRestore:
    row = env.catalog().version(version)
    store = env.store(row.store)
    _, rows = select_catalogued(env, vm, patterns, version)
    with SafeTarget(target) as t:
        r = Restorer(t, conflict)
        for f in rows:
            r.restore((f.volume, *split_path(f.path)), f.kind, mode=f.mode,
                      mtime_ns=f.mtime_ns, attributes=f.attributes, link=f.target,
                      inode=f.inode or 0, nlink=f.nlink or 1,
                      blocks=partial(catalogued_blocks, store, f))
        r.finish()
    return r.out


@step(name="restore files from image", retries=1)
def restore_image_files(env: Environment, vm: str, version: str, patterns: list[str], target: str,
                        conflict: str) -> FileRestore:
    """Files straight out of an image version: its disks read lazily, chunk by chunk."""
    row = env.catalog().version(version)
    store = env.store(row.store)
    manifest = read_manifest(store, version)
    sel = Selection(patterns)
    out = FileRestore()
    found = 0
    with SafeTarget(target) as t:
        r = Restorer(t, conflict, out)
        for i, dm in enumerate(manifest.disks):
            img = ImageDisk(store, dm)
            out.image_bytes += dm.capacity_bytes
            dev = RangeFile(img, dm.capacity_bytes, block=64 << 10, cache_blocks=64)
            for report, vol in discover(dev, dm.capacity_bytes, i):
                if vol is None or not sel.wants_volume(vol.name):
                    if report.error and sel.wants_volume(report.name):
                        out.failed.append(f"{report.name}: {report.error}")
                    continue
                found += restore_volume(r, vol, sel)
            out.source_bytes_read += img.bytes_fetched
            out.source_chunks_read += img.chunks_fetched
        r.finish()
    if not found:
        raise UserError(f"nothing in image version {version} of {vm} matches "
                        f"{' '.join(patterns)!r}")
    return out


def check_restore_target(env: Environment, target: str | Path) -> None:
    """A restore never writes into a store: one line before anything is touched."""
    where = Path(target).expanduser().resolve()
    for s in env.dc.stores:
        root = Path(s.path).resolve()
        if where == root or where.is_relative_to(root):
            raise UserError(f"restore target {target} is inside store '{s.name}' ({root}): "
                            f"restore to a directory outside every store")


def image_version_of(env: Environment, vm: str, version: str | None) -> str:
    cat = env.catalog()
    row = cat.version(version) if version else cat.latest_version(vm)
    if row.object.name != vm or row.object.kind != "vm":
        raise UserError(f"version {row.id} is not an image version of VM {vm}")
    return row.id



# --- into the running guest (vSphere guest operations) -------------------------------------
def guest_password(user: str | None, password_env: str | None) -> str:
    """The guest password from the environment; one line when anything is missing."""
    import os

    if not user or not password_env:
        raise UserError("guest credentials missing for an in-guest restore: give --guest-user "
                        "and --guest-password-env (the variable holding the password)")
    value = os.environ.get(password_env)
    if not value:
        raise UserError(f"guest credentials missing: environment variable {password_env} "
                        f"is empty")
    return value


UPLOAD_ATTEMPTS = 4


def upload_retrying(upload: Callable[[], None], pause_s: float = 0.5) -> None:
    """One file into the guest, retried on transient errors (a 503, a dropped transfer)
    with a growing pause: a restore of many files must not fail, nor start over, on one
    hiccup. The task's own retry remains for what outlasts these attempts."""
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            upload()
            return
        except TransientError as exc:
            if attempt == UPLOAD_ATTEMPTS:
                raise
            get_run_logger().warning("%s; retrying (attempt %d/%d)", exc, attempt + 1,
                                     UPLOAD_ATTEMPTS)
            time.sleep(pause_s * attempt)


@step(name="restore guest files into the guest", retries=1)
def restore_into_guest(env: Environment, vm: str, version: str, patterns: list[str],
                       guest_dir: str, user: str, password_env: str,
                       conflict: str) -> FileRestore:
    """Catalogued files uploaded into the running guest under `guest_dir`."""
    from drivers.vsphere_guest import GuestFileExists, GuestFiles
    vcenter, info = env.locate_vm(vm)
    if info.power_state != "poweredOn":
        raise UserError(f"VM '{vm}' is {info.power_state}: an in-guest restore needs it "
                        f"running with VMware Tools")
    gf = GuestFiles(env.hypervisor(vcenter), info, user, guest_password(user, password_env))
    windows = info.guest_id.lower().startswith("win") or guest_dir[1:3] in (":\\", ":/")
    sep = "\\" if windows else "/"
    row = env.catalog().version(version)
    store = env.store(row.store)
    _, rows = select_catalogued(env, vm, patterns, version)
    out = FileRestore()
    made: set[str] = set()
    for r in rows:
        rel = split_path(r.path)
        where = f"{r.volume}:{r.path}"
        if not rel:
            continue
        path = guest_dir.rstrip("/\\") + sep + sep.join(rel)
        parent = path.rsplit(sep, 1)[0]
        if r.kind == "dir":
            if path not in made:
                gf.mkdir(path)
                made.add(path)
            continue
        if r.kind != "file":
            out.refused.append(f"{where}: {r.kind} not created in the guest")
            continue
        if parent not in made:
            gf.mkdir(parent)
            made.add(parent)
        name, n = path, 0
        while True:
            try:
                data = list(catalogued_blocks(store, r))
                upload_retrying(partial(
                    gf.upload, name, data, r.size, overwrite=conflict == "overwrite",
                    mode=mode_of(r.mode, r.attributes), mtime_s=r.mtime_ns // 10**9,
                    windows=windows))
                break
            except GuestFileExists:
                if conflict == "skip":
                    out.skipped.append(where)
                    name = ""
                    break
                n += 1
                name = f"{path}.restored-{n}"
        if name:
            out.files += 1
            out.bytes_written += r.size
            if n:
                out.renamed.append(f"{where} -> {name}")
    return out

"""Which transport moves a disk's bytes between its datastore and the proxy.

The proxy's `transports` are tried in order for each disk. "direct" works only for a
datastore this proxy has a directory for (`proxies[].datastores`) whose directory
really holds the disk's file (drivers.transport_direct checks it); otherwise the next
transport is tried, and "network" (HTTPS through the host) always reaches the disk.
Callers record the transport used, so a version says how it was read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dpflow.errors import UserError
from drivers.protocols import DiskInfo, DiskReader
from drivers.transport_direct import DirectDisk, visible_file
from drivers.transport_direct import write_disk as write_direct

if TYPE_CHECKING:
    from pathlib import Path

    from dpflow.environment import Environment


def _choose(env: Environment, disk: DiskInfo) -> tuple[str, Path | None, list[str]]:
    """The first usable transport for `disk` (and its file, for direct), and why the
    ones before it were passed over (only datastores configured for direct count)."""
    proxy = env.dc.proxies[0]
    passed: list[str] = []
    for transport in proxy.transports:
        if transport == "network":
            return "network", None, passed
        mount = proxy.datastores.get(disk.datastore)
        if mount is None:
            continue
        path, why = visible_file(mount, disk.file_name, disk.capacity_bytes)
        if path is not None:
            return "direct", path, passed
        passed.append(f"direct: datastore {disk.datastore} not visible ({why})")
    raise UserError(f"disk {disk.file_name}: no transport of proxy '{proxy.name}' reaches it "
                    f"({'; '.join(passed) or 'its datastore has no directory in datastores'});"
                    f" mount the datastore or add 'network' to transports")


def open_reader(env: Environment, vcenter: str, disk: DiskInfo
                ) -> tuple[DiskReader, str, list[str]]:
    """A reader of `disk`, the transport's name, and the transports passed over."""
    transport, path, passed = _choose(env, disk)
    if path is not None:
        direct: Any = DirectDisk(path, disk.capacity_bytes)  # reads give a bytearray
        return direct, transport, passed
    return env.hypervisor(vcenter).open_disk(disk), transport, passed


def write_disk(env: Environment, vcenter: str, disk: DiskInfo, blocks: Iterable[bytes]
               ) -> tuple[str, list[str]]:
    """Replace the disk's content by `blocks` (direct: zero blocks become holes); the
    transport used and the ones passed over."""
    transport, path, passed = _choose(env, disk)
    if path is not None:
        write_direct(path, disk.capacity_bytes, blocks)
    else:
        env.hypervisor(vcenter).write_disk(disk, blocks)
    return transport, passed

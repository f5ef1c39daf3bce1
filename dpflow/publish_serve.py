"""Serve a published version (dpflow.published) in its own process, and start/stop it.

    python -m dpflow.publish_serve DC VERSION MOUNTPOINT OVERLAY_DIR

The server outlives the flow that started it (the recovered VM runs from it until it is
migrated or the recovery is aborted); it opens the data centre's store itself (the key
from the data centre's secret reference, never from an argument) and ends when its mount
is unmounted. `start` waits until the mount answers; `stop` unmounts and waits for the
process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from dpflow.errors import PermanentError

READY_S = 30.0


def start(dc: str, version_id: str, mount: Path, overlay: Path) -> int:
    """The server's pid once `mount` serves the version; PermanentError if it does not."""
    mount.mkdir(parents=True, exist_ok=True)
    overlay.mkdir(parents=True, exist_ok=True)
    log = open(overlay / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "dpflow.publish_serve", dc, version_id,
                             str(mount), str(overlay)], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + READY_S
    while not os.path.ismount(mount):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            tail = (overlay / "server.log").read_text(errors="replace").strip().splitlines()
            raise PermanentError(f"publishing version {version_id} at {mount} failed: "
                                 f"{tail[-1] if tail else 'the server did not start'}")
        time.sleep(0.05)
    return proc.pid


def stop(mount: Path, pid: int | None = None, timeout_s: float = 30.0) -> None:
    """Unmount (the server then ends); a mount that is already gone is fine."""
    if os.path.ismount(mount):
        r = subprocess.run(["fusermount3", "-u", str(mount)], capture_output=True, text=True)
        if r.returncode != 0 and os.path.ismount(mount):
            raise PermanentError(f"cannot unmount {mount}: {r.stderr.strip()}")
    if pid is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)


def main(argv: list[str]) -> None:
    from mfusepy import FUSE

    from dpflow.environment import environment
    from dpflow.published import PublishedVersion
    from dpflow.store.manifest import read_manifest

    dc, version_id, mount, overlay = argv
    env = environment(dc)
    row = env.catalog().version(version_id)
    store = env.store(row.store)
    manifest = read_manifest(store, version_id)
    ops = PublishedVersion(store, manifest.disks, row.object.name, Path(overlay))
    FUSE(ops, mount, foreground=True, nothreads=True, direct_io=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Serve a published version (dpflow.published) in its own process, and start/stop it.

    python -m dpflow.publish_serve OVERLAY_DIR

The server outlives the flow that started it (the recovered VM runs from it until it is
migrated or the recovery is aborted) and ends when its mount is unmounted. What it
serves is written by `start` to OVERLAY_DIR/publish.json (store, disks, mount point);
the store key, resolved by the caller from the data centre's secret reference, reaches
it in its environment (DPFLOW_PUBLISH_KEY), never in an argument or a file. It imports
neither Prefect nor the hypervisor driver, so it starts in about a second. `start` waits
until the mount answers; `stop` unmounts and waits for the process. The server watches its
store (dpflow.publish_health) and says so in its log when it cannot read it. Started again
on the same overlay, it serves the writes made before (their chunk map is on disk).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dpflow.errors import PermanentError
from dpflow.store.manifest import DiskManifest

READY_S = 30.0
KEY_ENV = "DPFLOW_PUBLISH_KEY"


def start(store_root: Path, compression_level: int, key: str | None, folder: str,
          disks: list[DiskManifest], mount: Path, overlay: Path, version_id: str) -> int:
    """The server's pid once `mount` serves the disks; PermanentError if it does not."""
    mount.mkdir(parents=True, exist_ok=True)
    overlay.mkdir(parents=True, exist_ok=True)
    spec = {"store": str(store_root), "compression_level": compression_level,
            "folder": folder, "mount": str(mount),
            "disks": [d.model_dump(mode="json") for d in disks]}
    (overlay / "publish.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key:
        env[KEY_ENV] = key
    log = open(overlay / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "dpflow.publish_serve", str(overlay)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True, close_fds=True)
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

    from dpflow.publish_health import StoreWatch
    from dpflow.published import PublishedVersion
    from dpflow.store.chunks import ChunkStore
    from dpflow.store.crypto import parse_key

    (overlay,) = argv
    spec = json.loads((Path(overlay) / "publish.json").read_text())
    key_text = os.environ.pop(KEY_ENV, None)
    store = ChunkStore(Path(spec["store"]), compression_level=spec["compression_level"],
                       key=parse_key(key_text) if key_text else None).init(create=False)
    disks = [DiskManifest.model_validate(d) for d in spec["disks"]]
    watch = StoreWatch(Path(spec["store"]), Path(overlay), spec["folder"])
    ops = PublishedVersion(store, disks, spec["folder"], Path(overlay), watch.read_error)
    watch.start()
    try:
        FUSE(ops, spec["mount"], foreground=True, nothreads=True, direct_io=True)
    finally:
        watch.stop()


if __name__ == "__main__":
    main(sys.argv[1:])

"""Is the store behind a published version still there? Noticed by the server, told to the user.

An instantly recovered VM reads every chunk it has not read yet from the store; a store
that becomes unreachable (its share gone, its disk unmounted, its permissions changed)
does not stop the VM at once, but its next read of unread data fails. Two parts notice:

- the publishing server (dpflow.publish_serve): a read the store cannot answer, and a
  probe of the store every PROBE_S seconds, each logged as one loud line in its log and
  recorded in OVERLAY/health.json (and again when the store is back);
- dpflow itself: `dpflow instant-recover --status` shows that record and probes the store
  too, and a migration is refused while the store cannot be read (it reads every chunk).

Production is never touched by either: the notice is all that happens.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from dpflow.errors import first_line

PROBE_S = 2.0
MARKER = "dpflow-store.json"


def store_problem(root: Path) -> str | None:
    """Why the store at `root` cannot be read now (None: it can): its marker file and its
    packs folder are what every read of a chunk needs."""
    try:
        (root / MARKER).read_bytes()
        os.listdir(root / "packs")
    except OSError as exc:
        return first_line(exc)
    return None


def health_path(overlay: Path) -> Path:
    return overlay / "health.json"


def read_health(overlay: Path) -> dict[str, object]:
    """What the server recorded; {} when it recorded nothing (all well so far)."""
    try:
        doc: dict[str, object] = json.loads(health_path(overlay).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return doc


class StoreWatch:
    """The server's half: records outages of the store and tells them once each."""

    def __init__(self, store_root: Path, overlay: Path, vm: str) -> None:
        self.root, self.overlay, self.vm = store_root, overlay, vm
        self.reachable = True
        self.read_errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _record(self, **fields: object) -> None:
        doc = read_health(self.overlay) | fields | {
            "store": str(self.root), "reachable": self.reachable,
            "read_errors": self.read_errors, "at": datetime.now(UTC).isoformat()}
        tmp = health_path(self.overlay).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(health_path(self.overlay))

    def _say(self, line: str) -> None:
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {line}", file=sys.stderr, flush=True)

    def _lost(self, why: str) -> None:
        """Under the lock: the first failure of an outage is told, the rest counted."""
        if self.reachable:
            self.reachable = False
            self._say(f"STORE UNREACHABLE: store {self.root} of the published version of "
                      f"{self.vm} cannot be read ({why}): the VM's reads of data it has not "
                      f"read yet fail with I/O errors until it is back; production is "
                      f"untouched")
        self._record(error=why)

    def read_error(self, disk: str, offset: int, exc: BaseException) -> None:
        """A read of the version failed (the hook of dpflow.published.OverlayDisk)."""
        with self._lock:
            self.read_errors += 1
            self._lost(f"reading {disk} at offset {offset:,}: {first_line(exc)}")

    def probe(self) -> None:
        problem = store_problem(self.root)
        with self._lock:
            if problem is not None:
                self._lost(problem)
            elif not self.reachable:
                self.reachable = True
                self._say(f"store {self.root} is reachable again: the published version of "
                          f"{self.vm} reads from it again")
                self._record(error=None)

    def start(self, every_s: float = PROBE_S) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.probe()
        threading.Thread(target=loop, name="store-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


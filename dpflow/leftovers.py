"""Sessions whose owner is gone: found on the start of a run, closed as `aborted`.

A process killed with -9 (or a machine that died) cannot close its session; the catalog
would say `running` forever. A session's owner is known to be gone when:
- it ran on this host and its process no longer exists;
- it is a kind of session that holds its object's lock (LOCKED_KINDS) and that lock is
  free, or held by the caller itself: a live owner would hold it. A lock of a killed
  process is freed when its lease expires (dpflow.locks: at most LEASE_BOUND_S);
- it started more than STALE_AFTER_S ago on another host and holds no lock we can ask.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from dpflow.catalog import Catalog, SessionRow

STALE_AFTER_S = 24 * 3600

# session kind → the kind of lock (dpflow.locks.exclusive) its flow holds on its object
LOCKED_KINDS = {"backup-image": "vm", "restore-image": "vm", "backup-files": "vm",
                "replicate-luns": "lungroup", "restore-luns": "lungroup"}


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def orphan_reason(row: SessionRow, *, held: tuple[str, str] | None,
                  lock_free: Callable[[str, str], bool], now: datetime | None = None
                  ) -> str | None:
    """Why `row`'s owner is gone, or None while it may be alive. `held` is the lock the
    caller holds (kind, object name); `lock_free(kind, name)` asks the lock service."""
    now = now or datetime.now(UTC)
    if row.host == socket.gethostname() and row.pid is not None and _process_gone(row.pid):
        return f"its process {row.pid} on {row.host} is gone"
    lock = LOCKED_KINDS.get(row.kind)
    if lock is not None:
        if held == (lock, row.object.name):
            return f"its lock on {lock} {row.object.name} was given up (lease expired)"
        if lock_free(lock, row.object.name):
            return f"nobody holds the lock on {lock} {row.object.name} (lease expired)"
        return None
    started = row.started if row.started.tzinfo else row.started.replace(tzinfo=UTC)
    if (now - started).total_seconds() > STALE_AFTER_S:
        return f"no sign of life for {STALE_AFTER_S // 3600} h (host {row.host or 'unknown'})"
    return None


def close_orphan_sessions(catalog: Catalog, *, own: str | None, held: tuple[str, str] | None,
                          lock_free: Callable[[str, str], bool], apply: bool = True
                          ) -> list[str]:
    """Close every running session whose owner is gone as `aborted` (apply=False: only
    list them); returns one line per session: id, what it was, why it was closed."""
    out = []
    for row in catalog.running_sessions():
        if row.id == own:
            continue
        why = orphan_reason(row, held=held, lock_free=lock_free)
        if why is None:
            continue
        line = (f"session {row.id} ({row.kind} of {row.object.name}, started "
                f"{row.started:%Y-%m-%d %H:%M}): {why}")
        if not apply or catalog.abort_session(row.id, f"aborted: {why}"):
            out.append(line)
    return out

"""An application on the database double: numbered transactions, each committed alone.

The journal keeps (id, commit time, SCN right after the commit) of every commit the
database acknowledged, so a recovered database can be checked transaction by
transaction: complete recovery must hold every acknowledged id; a point-in-time recovery
exactly those committed at or before the point, none after.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from simulators.oracle.client import connect


@dataclass
class Journal:
    acked: list[tuple[int, float]] = field(default_factory=list)  # (id, time acknowledged)

    def ids(self) -> list[int]:
        return [i for i, _ in self.acked]


class Workload(threading.Thread):
    """Commits ids next, next+1, ... through its own connection until stopped or refused."""

    def __init__(self, dsn: str, user: str, password: str, start: int = 1,
                 pause_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.dsn, self.user, self.password = dsn, user, password
        self.next_id = start
        self.pause_s = pause_s
        self.journal = Journal()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._conn: Any = None

    def commit_one(self) -> int:
        if self._conn is None:
            self._conn = connect(user=self.user, password=self.password, dsn=self.dsn)
        cur = self._conn.cursor()
        n = self.next_id
        cur.execute("INSERT INTO dpflow_txn (id) VALUES (:id)", {"id": n})
        self._conn.commit()
        self.journal.acked.append((n, time.time()))
        self.next_id += 1
        return n

    def commit(self, count: int) -> None:
        for _ in range(count):
            self.commit_one()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.commit_one()
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - kept for the test/demo to report
            self.error = exc

    def halt(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join()


def committed_rows(dsn: str, user: str, password: str) -> list[tuple[int, int]]:
    """(id, commit SCN) of every row the open database holds."""
    conn = connect(user=user, password=password, dsn=dsn)
    cur = conn.cursor()
    cur.execute("SELECT id, scn FROM dpflow_txn ORDER BY id")
    return cur.fetchall()

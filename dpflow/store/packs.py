"""Pack files and their index: many chunks per file, found through SQLite.

Small fixed chunks (64 KiB, the CBT block) make millions of chunks per data centre; one
file each would cost an fsync and an inode per chunk. Instead each writer thread appends
to its own pack (≈32 MiB), sealed with one fsync and renamed into place, and only then are
its chunks entered in the index, in one transaction. A pack carries its own index in a
trailer, so the SQLite index can be rebuilt from the packs alone.

Pack: b"DPP2" + blob* + trailer(json) + u64 trailer length + b"DPPI".
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

from dpflow.store.durable import fsync_dir

PACK_MAGIC = b"DPP2"
TRAILER_MAGIC = b"DPPI"


class PackIndex:
    """chunk id → (pack, offset, length), shared by threads and processes (SQLite WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._lock = threading.Lock()
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, pack TEXT NOT NULL,"
                   " offset INTEGER NOT NULL, length INTEGER NOT NULL, created REAL NOT NULL)"
                   " WITHOUT ROWID")
        db.execute("CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack)")
        db.commit()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # one connection per thread, closed by close() from any thread, or here once
            # its thread has ended (pipeline threads come and go; a connection in a
            # reference cycle would otherwise keep its file descriptors until a GC)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._lock:
                dead = [c for t, c in self._all if (th := t()) is None or not th.is_alive()]
                self._all = [(t, c) for t, c in self._all if all(c is not d for d in dead)]
                self._all.append((weakref.ref(threading.current_thread()), db))
            for c in dead:
                c.close()
        return db

    def close(self) -> None:
        """Close every connection (call when no thread uses the index any more)."""
        with self._lock:
            conns, self._all = [c for _, c in self._all], []
        self._local = threading.local()
        for db in conns:
            db.close()

    def lookup(self, cid: str) -> tuple[str, int, int] | None:
        row = self._db().execute("SELECT pack, offset, length FROM chunks WHERE id=?",
                                 (cid,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def add(self, pack: str, entries: list[tuple[str, int, int]]) -> None:
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO chunks VALUES (?,?,?,?,?)",
                           [(cid, pack, off, ln, now) for cid, off, ln in entries])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def remove_packs(self, packs: list[str]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM chunks WHERE pack=?", [(p,) for p in packs])
        db.execute("COMMIT")

    def entries(self) -> Iterator[tuple[str, str, int, int, float]]:
        yield from self._db().execute("SELECT id, pack, offset, length, created FROM chunks")

    def count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM chunks").fetchone()[0])


class PackWriter:
    """One open pack, owned by one thread at a time."""

    def __init__(self, tmp_dir: Path) -> None:
        self.name = uuid.uuid4().hex
        self.tmp = tmp_dir / f"{self.name}.pack.tmp"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        # held while the pack is written and released by the kernel when the process dies:
        # a temporary pack nobody holds is a leftover (sweep_temp removes it)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = 0
        self.entries: list[tuple[str, int, int]] = []
        self._write(PACK_MAGIC)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def append(self, cid: str, blob: bytes) -> None:
        self.entries.append((cid, self.size, len(blob)))
        self._write(blob)

    def seal(self, packs_dir: Path) -> tuple[str, Path]:
        """Trailer, fsync, rename into place: after this the pack is durable and whole."""
        trailer = json.dumps([[c, o, n] for c, o, n in self.entries]).encode()
        self._write(trailer + struct.pack("<Q", len(trailer)) + TRAILER_MAGIC)
        os.fsync(self.fd)
        os.close(self.fd)
        final = pack_path(packs_dir, self.name)
        os.replace(self.tmp, final)
        fsync_dir(final.parent)
        return self.name, final

    def abandon(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def pack_path(packs_dir: Path, name: str) -> Path:
    return packs_dir / name[:2] / f"{name}.pack"


def read_trailer(path: Path) -> list[tuple[str, int, int]]:
    """A pack's own index (to rebuild or cross-check the SQLite index)."""
    with open(path, "rb") as f:
        f.seek(-12, os.SEEK_END)
        length, magic = struct.unpack("<Q4s", f.read(12))
        if magic != TRAILER_MAGIC:
            raise ValueError(f"pack {path.name} has no trailer")
        f.seek(-12 - length, os.SEEK_END)
        return [(c, o, n) for c, o, n in json.loads(f.read(length))]

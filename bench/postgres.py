"""A throw-away PostgreSQL server from Debian's `postgresql` package, for the benchmarks
and tests that run the Prefect server and the catalog on PostgreSQL.

    with Postgres() as pg:
        pg.create_db("prefect")
        pg.url("prefect")                     # postgresql+asyncpg://...@127.0.0.1:PORT/prefect
        pg.url("catalog", driver="psycopg")   # the catalog's (sync) driver

PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres`
system user, in a fresh directory under the system's temp dir (pytest's own temp dirs
are 0700 root, out of that user's reach). Local connections are trusted, it listens on
127.0.0.1 only; stop() ends it (fast shutdown) and removes its directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dpflow-pg-"))
        self.dir = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._started = False

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {why[0]}")

    def start(self) -> Postgres:
        self.sock.mkdir()
        if self._as_user:
            for d in (self.root, self.sock):
                shutil.chown(d, "postgres")
        self._run(_bin("initdb"), "-D", str(self.dir), "--auth=trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c synchronous_commit=off -c max_connections=300")
        self._run(_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-w", "-t", "120", "-l",
                  str(self.log), "start")
        self._started = True
        return self

    def create_db(self, name: str) -> None:
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  name)

    def url(self, db: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._run(_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

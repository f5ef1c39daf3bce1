"""A throw-away PostgreSQL server from Debian's `postgresql` package, for the benchmarks
and tests that run the Prefect server (and the catalog) on PostgreSQL.

    with Postgres(tmp_dir) as pg:
        pg.url("prefect", driver="asyncpg")   # postgresql+asyncpg://...@127.0.0.1:PORT/prefect

initdb runs as the `postgres` system user when started as root (PostgreSQL refuses to run
as root); local connections are trusted, it listens on 127.0.0.1 only, and stop() ends
it (fast shutdown) and leaves its directory to the caller.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
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
    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir / "pgdata"
        self.sock = work_dir / "pgsock"
        self.port = _free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as_user, *cmd], check=True, capture_output=True)

    def start(self) -> Postgres:
        for d in (self.dir.parent, self.sock):
            d.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(_bin("initdb"), "-D", str(self.dir), "--auth=trust", "-U", "postgres",
                  "--no-sync")
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c max_connections=200")
        self._run(_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-w", "-l",
                  str(self.dir.parent / "postgres.log"), "start")
        return self

    def create_db(self, name: str) -> None:
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  name)

    def url(self, db: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

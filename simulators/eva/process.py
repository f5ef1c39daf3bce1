"""Start, drive and stop a simulated EVA server process from Python.

    with EvaServer.start(tmp, pools={"DG1": 64 << 30}, hosts={"proxy": ["5000..01"]}) as eva:
        conn = eva.connection()          # pywbem.WBEMConnection, HTTPS, CA verified
        eva.faults.fail_method("CreateGroupReplica", rc=6)
        eva.host_port("proxy").write(lun=1, offset=0, data=b"...")

Why a handle object: tests and the demo need the same four things (URL, CA file,
credentials, data path) and must never leave the process running.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from simulators.eva.model import EvaArray
from simulators.eva.server import spawn
from simulators.tls import ensure_certs

NAMESPACE = "root/eva"


class RemoteFaults:
    """The `Faults` API, sent to the server process (same names and arguments)."""

    def __init__(self, server: EvaServer) -> None:
        self._s = server

    def fail_method(self, method: str, rc: int = 4, description: str = "injected fault",
                    count: int = 1) -> None:
        self._s.control(op="fail_method", method=method, rc=rc, description=description,
                        count=count)

    def fail_job(self, method: str, error_code: int = 32769,
                 description: str = "injected job failure", count: int = 1) -> None:
        self._s.control(op="fail_job", method=method, error_code=error_code,
                        description=description, count=count)

    def hang(self, method: str, seconds: float = 5.0, count: int = 1) -> None:
        self._s.control(op="hang", method=method, seconds=seconds, count=count)

    def fill_pool(self, pool: str, filled: bool = True) -> None:
        self._s.control(op="fill_pool", pool=pool, filled=filled)

    def clear(self) -> None:
        self._s.control(op="clear")

    def fired(self) -> dict[str, int]:
        """Faults applied per method (lower-case name) since the last clear."""
        return dict(self._s.control(op="fired"))


class RemoteHostPort:
    """A host's data path to the server process (LUN reads and writes over HTTPS)."""

    def __init__(self, server: EvaServer, host: str) -> None:
        self._s, self.host = server, host

    def _url(self, lun: int) -> str:
        return f"{self._s.url}/san/{self.host}/{lun}"

    def write(self, lun: int, offset: int, data: bytes) -> None:
        r = self._s.http.put(self._url(lun), params={"offset": offset}, data=data)
        if r.status_code != 204:
            raise OSError(f"write to LUN {lun} of {self.host} refused: {r.text}")

    def read(self, lun: int, offset: int, length: int) -> bytes:
        r = self._s.http.get(self._url(lun), params={"offset": offset, "length": length})
        if r.status_code != 200:
            raise OSError(f"read of LUN {lun} of {self.host} refused: {r.text}")
        return r.content


class EvaServer:
    """A running simulated array process."""

    def __init__(self, root: Path, proc: Any, port: int, ca_file: Path, user: str,
                 password: str) -> None:
        self.root, self.proc, self.port = root, proc, port
        self.url = f"https://127.0.0.1:{port}"
        self.ca_file, self.user, self.password = ca_file, user, password
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(ca_file)
        self.http.auth = (user, password)
        self.faults = RemoteFaults(self)

    @classmethod
    def start(cls, root: Path | str, pools: dict[str, int] | None = None,
              hosts: dict[str, list[str]] | None = None, user: str = "admin",
              password: str | None = None, name: str = "EVA1") -> EvaServer:
        """Create (or reopen) the array in `root` and serve it; pools/hosts added if new."""
        root = Path(root)
        array = EvaArray(root / "array", name=name)
        for name, cap in (pools or {}).items():
            if name not in array.pools:
                array.add_pool(name, cap)
        for name, wwns in (hosts or {}).items():
            if name not in array.hosts:
                array.add_host(name, wwns)
        array.close()
        certs = ensure_certs(root / "tls")
        password = password or secrets.token_urlsafe(12)
        proc, port = spawn(root / "array", str(certs.cert_file), str(certs.key_file),
                           user, password)
        return cls(root, proc, port, certs.ca_file, user, password)

    def connection(self, timeout: float = 30.0, password: str | None = None) -> Any:
        """A plain pywbem.WBEMConnection to the array, verifying its certificate."""
        import pywbem

        conn = pywbem.WBEMConnection(self.url, (self.user, password or self.password),
                                     default_namespace=NAMESPACE, ca_certs=str(self.ca_file),
                                     timeout=timeout)
        conn.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the array's own CA
        return conn

    def host_port(self, host: str) -> RemoteHostPort:
        return RemoteHostPort(self, host)

    def control(self, **req: Any) -> Any:
        r = self.http.post(f"{self.url}/sim/control", json=req)
        r.raise_for_status()
        return r.json()

    def set_jobs(self, job_mode: bool, job_seconds: float = 0.0) -> None:
        self.control(op="jobs", job_mode=job_mode, job_seconds=job_seconds)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.http.close()

    def __enter__(self) -> EvaServer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

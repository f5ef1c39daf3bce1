"""One vCenter login that survives a long night: re-login, call timeouts, task deadlines.

vCenter ends sessions (idle time, maximum lifetime, an administrator, a restart); Bareos'
VMware plugin failed after ~66 minutes for that reason. Here every SOAP exchange runs
through `call`, which logs in again once when the server answers NotAuthenticated and
re-runs the exchange; `renew_cookies` gives datastore HTTP readers the new session cookie
after a 401. The re-run is safe because vCenter refuses an unauthenticated call before
doing anything; waiting on a task re-reads the task by its moref under the new login, so a
session that expires while a task runs never starts that task's method a second time.

Three clocks, configured on the endpoint: `connect_timeout_s` (TCP + TLS + login),
`call_timeout_s` (one SOAP exchange once connected) and `task_timeout_s` (one vSphere task,
from its start to its end state).

Errors are translated here, once: pyVmomi faults and socket/TLS errors become UserError
(the administrator must act), TransientError (retry) or PermanentError.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from drivers.endpoints import VCenterEndpoint
from drivers.errors import DpflowError, PermanentError, TransientError, UserError
from drivers.protocols import QuiesceFailed, TaskDeadlineExceeded

T = TypeVar("T")
log = logging.getLogger("dpflow.drivers.vsphere")

#: vSphere faults that say "not now" rather than "never".
_TRANSIENT_FAULTS: tuple[type, ...] = (
    vim.fault.ApplicationQuiesceFault,
    vim.fault.TaskInProgress,
    vim.fault.Timedout,
    vim.fault.ResourceInUse,
    vmodl.fault.HostCommunication,
    vmodl.fault.SystemError,
    vmodl.fault.RequestCanceled,
)
#: a connection that vCenter closed mid-exchange (a restart) ends a TLS stream with EOF
NETWORK_ERRORS = (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError,
                  ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _fault_text(fault: vmodl.MethodFault) -> str:
    msg = getattr(fault, "msg", None) or getattr(fault, "localizedMessage", None) or ""
    for fm in getattr(fault, "faultMessage", None) or []:
        msg = f"{msg} {fm.message}".strip()
    return f"{type(fault).__name__.split('.')[-1]}: {msg}".rstrip(": ")


def translate(exc: BaseException, what: str) -> Exception:
    """Map a pyVmomi or network error met while doing `what` to dpflow's tree."""
    if isinstance(exc, vim.fault.ApplicationQuiesceFault):
        return QuiesceFailed(f"{what}: {_fault_text(exc)}")
    if isinstance(exc, vim.fault.InvalidLogin):
        return UserError(f"{what}: wrong user or password (InvalidLogin)")
    if isinstance(exc, _TRANSIENT_FAULTS):
        return TransientError(f"{what}: {_fault_text(cast(vmodl.MethodFault, exc))}")
    if isinstance(exc, vmodl.MethodFault):
        return PermanentError(f"{what}: {_fault_text(exc)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UserError(f"{what}: TLS certificate not trusted ({exc.verify_message}); "
                         f"set ca_file to the CA that signed it")
    if isinstance(exc, (*NETWORK_ERRORS, requests.ConnectionError, requests.Timeout)):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


def _call_timeout_scheme(call_timeout_s: float) -> type[http.client.HTTPSConnection]:
    """An HTTPS connection class that connects within the stub's (connect) timeout, then
    gives every exchange on the socket `call_timeout_s`: pyVmomi has one timeout for both."""

    class _Conn(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(call_timeout_s)

    return _Conn


def session_cookies(si: Any) -> dict[str, str]:
    """The session cookie of a pyVmomi ServiceInstance, for datastore HTTP requests."""
    raw = si._stub.cookie  # 'vmware_soap_session="..."; Path=/; ...'
    name, _, rest = raw.partition("=")
    return {name.strip(): rest.split(";")[0].strip()} if rest else {}


class VcConnection:
    """A logged-in pyVmomi connection that logs in again when vCenter ends the session."""

    def __init__(self, vc: VCenterEndpoint, password: str) -> None:
        self.vc = vc
        self._password = password
        self._si: Any = None
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context(cafile=str(vc.ca_file) if vc.ca_file else None)
        self.logins = 0  #: successful logins of this connection (the first one included)

    def _connect(self) -> Any:
        where = f"vCenter {self.vc.name} ({self.vc.host}:{self.vc.port})"
        try:
            si = SmartConnect(host=self.vc.host, port=self.vc.port, user=self.vc.user,
                              pwd=self._password, sslContext=self._ssl,
                              httpConnectionTimeout=self.vc.connect_timeout_s)
        except ssl.SSLCertVerificationError as exc:
            raise translate(exc, where) from exc
        except vim.fault.InvalidLogin as exc:
            raise UserError(f"vCenter {self.vc.name}: wrong user or password for "
                            f"'{self.vc.user}' (InvalidLogin); fix the secret it references"
                            ) from exc
        except (http.client.HTTPException, ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            # it answered (503, a cut connection): the address is right, vCenter is busy
            # or restarting
            raise TransientError(f"{where}: login: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            if self.logins:  # reached before: the address is right, vCenter is down now
                raise TransientError(f"{where} unreachable ({exc.__class__.__name__}: "
                                     f"{exc}); logging in again later") from exc
            raise UserError(f"{where} unreachable ({exc.__class__.__name__}: {exc}); check "
                            f"host, port and network") from exc
        stub = si._stub
        if stub.scheme is http.client.HTTPSConnection:
            stub.scheme = _call_timeout_scheme(self.vc.call_timeout_s)
            stub.DropConnections()  # the login's connections carry the connect timeout
        self.logins += 1
        return si

    @property
    def si(self) -> Any:
        with self._lock:
            if self._si is None:
                self._si = self._connect()
            return self._si

    def _renew(self, failed: Any) -> None:
        """Forget the login `failed` (vCenter ended it); the next use logs in again. Threads
        that met the same expired session renew it once between them."""
        with self._lock:
            if failed is None or self._si is not failed:
                return
            self._si = None
        failed._stub.DropConnections()  # no Logout: the server has already ended it
        log.warning("vCenter %s ended the session; logging in again", self.vc.name)

    def renew_cookies(self, stale: dict[str, str]) -> dict[str, str]:
        """Cookies of a live session, for a datastore request refused with `stale` (401)."""
        with self._lock:
            current = self._si
        if current is not None and session_cookies(current) == stale:
            self._renew(current)
        return session_cookies(self.si)

    def check(self) -> None:
        """Log in if needed and prove the session is alive (renewed if it ended)."""
        def go() -> None:
            # vCenter answers an unset currentSession for an ended session, not a fault
            if self.si.content.sessionManager.currentSession is None:
                raise vim.fault.NotAuthenticated()
        self.call("check the login", go)

    def close(self) -> None:
        with self._lock:
            si, self._si = self._si, None
        if si is not None:
            try:
                Disconnect(si)
            except Exception:  # noqa: BLE001 - closing a dead session is not an error
                pass

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a SOAP exchange; log in again once if the session ended; translate errors."""
        si: Any = None
        for attempt in (1, 2):
            try:
                si = self.si
                return fn()
            except vim.fault.NotAuthenticated as exc:
                if attempt == 2:
                    raise translate(exc, what) from exc
                self._renew(si)
            except DpflowError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                raise translate(exc, what) from exc
        raise AssertionError("unreachable")

    def _task_info(self, moref: str) -> Any:
        for attempt in (1, 2):
            si = self.si
            try:
                return vim.Task(moref, si._stub).info
            except vim.fault.NotAuthenticated:
                if attempt == 2:
                    raise
                self._renew(si)
        raise AssertionError("unreachable")

    def wait(self, task: Any, what: str, deadline_s: float | None = None) -> Any:
        """The task's result once it ends; its fault if it failed; TaskDeadlineExceeded
        (transient: the task may still finish) when it runs past `deadline_s` (default:
        the endpoint's task_timeout_s). The task is left running: whoever retries must
        look for it first. A failed task raises its vSphere fault (run inside `call`,
        which translates it)."""
        return self._wait(task._moId, what, deadline_s)

    def wait_task(self, moref: str, what: str, deadline_s: float | None = None) -> Any:
        """`wait` for a task known by its moref (e.g. from TaskDeadlineExceeded.task)."""
        return self.call(what, lambda: self._wait(moref, what, deadline_s))

    def _wait(self, moref: str, what: str, deadline_s: float | None) -> Any:
        limit = self.vc.task_timeout_s if deadline_s is None else deadline_s
        end = time.monotonic() + limit
        pause = 0.05
        while True:
            info = self._task_info(moref)
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                raise info.error
            if time.monotonic() >= end:
                raise TaskDeadlineExceeded(
                    f"{what}: vCenter task {moref} still {info.state} after {limit:g} s "
                    f"(task_timeout_s of vCenter {self.vc.name}); it may still finish",
                    task=moref)
            time.sleep(min(pause, max(0.0, end - time.monotonic())))
            pause = min(pause * 1.5, 1.0)

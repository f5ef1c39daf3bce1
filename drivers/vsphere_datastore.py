"""Disk bytes over the datastore HTTP interface (/folder), one ranged GET per call.

The proxy's "vLUN mount": the session cookie goes with every request (vCenter checks it;
after a 401 a fresh one is asked of the login), TLS is verified, and a body is received
straight into the caller's buffer. Retry and resume are not here: open_disk wraps this
transport in drivers.retry.RetryingReader.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable

import requests
import urllib3

from drivers.errors import PermanentError, TransientError, UserError


def untrusted(exc: BaseException) -> bool:
    """Whether a TLS error was the certificate's verification failing (anything else,
    e.g. an EOF in the handshake, is a connection problem)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return False


class DatastoreDisk:
    """A disk file on a datastore read by HTTP ranges (a RangeTransport: one attempt per
    call; open_disk wraps it in drivers.retry.RetryingReader). One requests session per
    thread; the session cookie is renewed after a 401."""

    def __init__(self, url: str, size: int, cookies: dict[str, str], verify: str | bool,
                 renew: Callable[[dict[str, str]], dict[str, str]] | None = None) -> None:
        self.url, self.size, self._cookies, self._verify = url, size, cookies, verify
        self._renew = renew  # cookies of a live session, given the refused ones (HTTP 401)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.trust_env = False  # no .netrc or proxy lookups per request; CA given below
            self._local.cookies = self._cookies  # what this thread's requests carry
            s.cookies.update(self._cookies)
            s.verify = self._verify
        return s

    def read_into(self, view: memoryview, offset: int) -> int:
        """One ranged GET of len(view) bytes at `offset`, received straight into `view`
        (no per-piece copies: at disk sizes every copy costs whole seconds of CPU on the
        proxy). Returns the bytes that arrived, fewer when the transfer was cut."""
        start, end = offset, offset + len(view) - 1
        got = 0
        done = False
        try:
            # verify= per request: REQUESTS_CA_BUNDLE would override a session's own
            r = self._session().get(self.url, headers={"Range": f"bytes={start}-{end}"},
                                    stream=True, timeout=(10, 60), verify=self._verify)
        except requests.exceptions.SSLError as exc:
            if not untrusted(exc):  # a TLS stream cut short (a restart): not the CA's fault
                self._local.session = None
                raise TransientError(f"range {start}-{end}: {exc}") from exc
            raise UserError(f"TLS certificate of the datastore server not trusted: {exc}; "
                            f"set ca_file to the CA that signed it") from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError,
                http.client.HTTPException) as exc:
            self._local.session = None
            raise TransientError(f"range {start}-{end}: {type(exc).__name__}: {exc}") from exc
        try:
            if r.status_code == 404:
                raise PermanentError(f"disk file not found: {self.url.split('?')[0]}")
            if r.status_code == 401 and self._renew is not None:
                self._cookies = self._renew(self._local.cookies)
                raise TransientError(f"session ended reading {start}-{end} (HTTP 401); "
                                     f"logged in again")
            if r.status_code >= 500 or r.status_code == 429:
                raise TransientError(f"HTTP {r.status_code} reading {start}-{end}")
            if r.status_code != 206:
                raise PermanentError(f"HTTP {r.status_code} for a range read of the disk")
            sent = int(r.headers.get("Content-Length", end - start + 1))
            if sent != end - start + 1:
                raise PermanentError(f"server answers {sent} bytes for a "
                                     f"{end - start + 1}-byte range")
            body = r.raw._fp  # http.client response: readinto lands in the caller's buffer
            assert body is not None, "a streamed response has its http.client body"
            try:
                while got < len(view):
                    n = body.readinto(view[got:])
                    if not n:
                        break
                    got += n
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
                if not got:
                    raise TransientError(f"range {start}-{end}: {type(exc).__name__}: "
                                         f"{exc}") from exc
            if not got:
                raise TransientError(f"transfer cut at byte {start}")
            done = got == len(view)
            return got
        finally:
            # a fully read body leaves the connection clean: keep it alive (a new TLS
            # handshake per range costs more than the transfer); otherwise drop it
            if done:
                r.raw.release_conn()
            else:
                r.close()
                self._local.session = None

    def close(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()

"""The inter-site link of Continuous Access: the only way bytes reach the other array.

Why an object of its own: a replicated write must cross something that can go down, come
back and be slow, and both arrays must see the same link. `Wire` is that state (up, a
bandwidth cap, a per-message delay); a `Link` carries messages over it to the peer array,
in-process (`LocalLink`, for unit tests) or over HTTPS to the peer's server process
(`HttpLink`, the peer's certificate verified). A message is a small dict plus optional
bytes; a link that is down raises `LinkDown` before anything is delivered.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from simulators.eva.model import EvaArray


class LinkDown(Exception):
    """The peer cannot be reached over the inter-site link (down, or no answer)."""


class Wire:
    """Link state shared by both directions: up/down, bytes per second, delay per message."""

    def __init__(self) -> None:
        self.up = True
        self.bandwidth: float | None = None  # bytes/s the link carries (None: unlimited)
        self.delay_s = 0.0
        self._lock = threading.Lock()

    def set(self, up: bool | None = None, bandwidth: float | None | str = "keep",
            delay_s: float | None = None) -> None:
        with self._lock:
            if up is not None:
                self.up = up
            if bandwidth != "keep":
                self.bandwidth = None if bandwidth is None else float(bandwidth)
            if delay_s is not None:
                self.delay_s = float(delay_s)

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "bandwidth": self.bandwidth, "delay_s": self.delay_s}


class Link(Protocol):
    wire: Wire

    def send(self, msg: dict[str, Any], data: bytes = b"") -> dict[str, Any]:
        """Deliver one message to the peer and return its answer; LinkDown if it cannot."""
        ...


class LocalLink:
    """A link to an array object in the same process (tests: two arrays, one wire)."""

    def __init__(self, peer: EvaArray, wire: Wire) -> None:
        self.peer, self.wire = peer, wire

    def send(self, msg: dict[str, Any], data: bytes = b"") -> dict[str, Any]:
        if not self.wire.up:
            raise LinkDown("inter-site link is down")
        if self.wire.delay_s:
            time.sleep(self.wire.delay_s)
        return self.peer.ca_receive(msg, data)


class HttpLink:
    """A link to a peer array's server process: POST /ca/message over verified HTTPS."""

    def __init__(self, url: str, user: str, password: str, ca_file: str,
                 wire: Wire | None = None, timeout_s: float = 5.0) -> None:
        import requests

        self.url = url.rstrip("/") + "/ca/message"
        self.wire = wire or Wire()
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca_file
        self.http.auth = (user, password)

    def send(self, msg: dict[str, Any], data: bytes = b"") -> dict[str, Any]:
        import requests

        if not self.wire.up:
            raise LinkDown("inter-site link is down")
        if self.wire.delay_s:
            time.sleep(self.wire.delay_s)
        body = json.dumps(dict(msg, data=base64.b64encode(data).decode())).encode()
        try:
            r = self.http.post(self.url, data=body, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise LinkDown(f"peer array unreachable: {e.__class__.__name__}") from e
        if r.status_code != 200:
            raise LinkDown(f"peer array answered HTTP {r.status_code}: {r.text[:200]}")
        return dict(r.json())


def decode_message(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The server side of `HttpLink.send`."""
    msg = json.loads(body)
    data = base64.b64decode(msg.pop("data", ""))
    return msg, data

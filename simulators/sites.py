"""Two sites for Continuous Access: EVA server processes that replicate to each other.

Why a helper: a test, the demo and the bench all need the same wiring (each array told
its peer's URL, credentials and CA, so the inter-site link is verified HTTPS like the
management path) and the same link controls on both ends.
"""

from __future__ import annotations

from typing import Any

from simulators.eva.process import EvaServer


def link_arrays(a: EvaServer, b: EvaServer) -> None:
    """Connect two running arrays both ways (names as the arrays report them)."""
    name_a, name_b = a.control(op="name")["name"], b.control(op="name")["name"]
    for here, there, peer in ((a, b, name_b), (b, a, name_a)):
        here.control(op="connect_peer", peer=peer, url=there.url, user=there.user,
                     password=there.password, ca_file=str(there.ca_file))


def set_link(arrays: list[EvaServer], **wire: Any) -> None:
    """The inter-site link as both ends see it: up=False cuts it, bandwidth (bytes/s)
    and delay_s slow it."""
    for e in arrays:
        e.control(op="link", **wire)

"""What keeps Continuous Access moving in a running array, and its run-time controls.

Why a thread: a real EVA replicates in the background; the async log drains, a copy
proceeds and a returning link merges without anyone asking. Unit tests with a manual
clock call `EvaArray.ca_pump()` themselves instead. The control operations connect an
array to its peer (credentials kept in memory only), cut or slow the link, move the
array's clock (the 15-minute failback guard) and read a DR group as the array sees it.
"""

from __future__ import annotations

import threading
from typing import Any

from simulators.eva.link import HttpLink, Wire
from simulators.eva.model import EvaArray

REMOTE_OPS = {"connect_peer", "link", "advance_clock", "dr_info", "dr_groups", "name"}


class Pump:
    """Calls `array.ca_pump()` every `interval_s` until stopped."""

    def __init__(self, array: EvaArray, interval_s: float = 0.05) -> None:
        self.array, self.interval_s = array, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ca-pump")

    def start(self) -> Pump:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.array.ca_pump()
            except Exception:  # noqa: BLE001 - a pump error must not kill replication
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wire_of(array: EvaArray) -> Wire:
    """The array's one wire (every link of this array shares it)."""
    wire = getattr(array, "_wire", None)
    if wire is None:
        wire = Wire()
        array._wire = wire  # type: ignore[attr-defined]
    return wire


def remote_control(array: EvaArray, req: dict[str, Any]) -> Any:
    op = req["op"]
    if op == "connect_peer":
        array.connect_peer(req["peer"], HttpLink(req["url"], req["user"], req["password"],
                                                 req["ca_file"], wire_of(array)))
    elif op == "link":
        wire_of(array).set(up=req.get("up"), bandwidth=req.get("bandwidth", "keep"),
                           delay_s=req.get("delay_s"))
    elif op == "advance_clock":
        array.clock.advance(float(req["seconds"]))  # type: ignore[attr-defined]
    elif op == "dr_info":
        return array.dr_info(req["group"])
    elif op == "name":
        return {"name": array.name}
    elif op == "dr_groups":
        with array.lock:
            return [array.dr_info(n) for n in array.dr_groups]
    return {"ok": True}

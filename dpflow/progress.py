"""Progress of long copies, published to whoever listens in this process.

Tasks report bytes; the CLI subscribes and draws rich progress bars. In a Prefect worker
nobody listens and reporting costs nothing.
"""

from __future__ import annotations

from typing import Protocol


class Listener(Protocol):
    def start(self, key: str, label: str, total: int) -> None: ...
    def advance(self, key: str, amount: int) -> None: ...
    def finish(self, key: str) -> None: ...


_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


class Meter:
    """One copy in progress; usable as the pipeline's progress callback."""

    def __init__(self, key: str, label: str, total: int) -> None:
        self.key = key
        for listener in _listeners:
            listener.start(key, label, total)

    def __call__(self, amount: int) -> None:
        for listener in _listeners:
            listener.advance(self.key, amount)

    def close(self) -> None:
        for listener in _listeners:
            listener.finish(self.key)


def meter(key: str, label: str, total: int) -> Meter:
    return Meter(key, label, total)


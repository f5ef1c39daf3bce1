"""Retry as a wrapper around a transport, not code inside each one (restic's RetryBackend).

A transport makes one attempt per call and says how far it got; `RetryingReader` turns
that into the DiskReader contract: exactly the bytes asked for, resumed where a cut
transfer stopped, with a bounded number of failures in a row and a growing pause. Every
transport (datastore HTTP, a direct path to the storage) gets the same behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from drivers.errors import TransientError


class RangeTransport(Protocol):
    """One way to read a disk's bytes, one attempt per call."""

    size: int

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill `view` from `offset` in one attempt; return how many bytes arrived (fewer
        than len(view) when the transfer was cut after some data). TransientError when
        nothing arrived and a new attempt may succeed; PermanentError or UserError when it
        will not."""
        ...

    def close(self) -> None: ...


class RetryingReader:
    """A DiskReader over a RangeTransport: `attempts` failures in a row end the read with
    TransientError; any progress starts the count again."""

    def __init__(self, transport: RangeTransport, attempts: int = 6, first_pause: float = 0.1,
                 max_pause: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.transport = transport
        self.size = transport.size
        self.attempts, self.first_pause, self.max_pause = attempts, first_pause, max_pause
        self._sleep = sleep
        self.failures = 0  #: failed attempts over the reader's life (a figure for reports)

    def _pause(self, failures: int) -> None:
        self._sleep(min(self.first_pause * 2 ** (failures - 1), self.max_pause))

    def read(self, offset: int, length: int) -> bytearray:
        """Exactly `length` bytes at `offset` (the caller keeps within the disk)."""
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        failures = 0
        while got < length:
            try:
                n = self.transport.read_into(view[got:], offset + got)
                if n <= 0:
                    raise TransientError(f"no bytes at {offset + got}")
            except TransientError as exc:
                failures += 1
                self.failures += 1
                if failures >= self.attempts:
                    raise TransientError(f"disk read at {offset + got} failed {failures} "
                                         f"times: {exc}") from exc
                self._pause(failures)
                continue
            got += n
            if got < length:  # cut after some data: one failure, counted from here
                failures = 1
                self.failures += 1
                self._pause(failures)
        return buf

    def close(self) -> None:
        self.transport.close()

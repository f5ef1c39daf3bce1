"""RetryingReader: retry and resume as a wrapper around any one-attempt transport."""

from __future__ import annotations

import pytest

from drivers.errors import PermanentError, TransientError
from drivers.retry import RetryingReader

DATA = bytes(range(256)) * 64  # 16 KiB


class Flaky:
    """A transport over DATA following a script: an int cuts the attempt after that many
    bytes, an exception is raised, None serves the whole range."""

    def __init__(self, script: list[object]) -> None:
        self.size = len(DATA)
        self.script = list(script)
        self.calls: list[tuple[int, int]] = []

    def read_into(self, view: memoryview, offset: int) -> int:
        self.calls.append((offset, len(view)))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        n = len(view) if step is None else min(int(step), len(view))  # type: ignore[call-overload]
        view[:n] = DATA[offset:offset + n]
        return n

    def close(self) -> None:
        pass


def test_cut_transfers_resume_where_they_stopped() -> None:
    t = Flaky([1000, 3000, 0, None])
    pauses: list[float] = []
    r = RetryingReader(t, sleep=pauses.append)
    assert bytes(r.read(100, 10_000)) == DATA[100:10_100]
    assert t.calls == [(100, 10_000), (1100, 9000), (4100, 6000), (4100, 6000)]
    assert r.failures == 3 and len(pauses) == 3


def test_failures_in_a_row_are_bounded_and_progress_resets_the_count() -> None:
    fail = TransientError("503")
    # the cut counts as the first failure of a new run: 1 + 4 failures stay below 6
    t = Flaky([fail] * 5 + [500] + [fail] * 4 + [None])
    r = RetryingReader(t, attempts=6, sleep=lambda s: None)
    assert bytes(r.read(0, 4096)) == DATA[:4096]
    t = Flaky([fail] * 6)
    with pytest.raises(TransientError, match="failed 6 times"):
        RetryingReader(t, attempts=6, sleep=lambda s: None).read(0, 4096)


def test_pauses_grow_and_are_capped() -> None:
    pauses: list[float] = []
    t = Flaky([TransientError("x")] * 5)
    RetryingReader(t, attempts=6, first_pause=0.5, max_pause=2.0, sleep=pauses.append).read(0, 10)
    assert pauses == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_permanent_errors_are_not_retried() -> None:
    t = Flaky([PermanentError("gone"), None])
    with pytest.raises(PermanentError):
        RetryingReader(t, sleep=lambda s: None).read(0, 10)
    assert len(t.calls) == 1

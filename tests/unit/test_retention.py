"""Keep rules and protection time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dpflow.retention import Candidate, KeepPolicy, decide

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def day(n: int, hour: int = 1) -> datetime:
    return NOW - timedelta(days=n) + timedelta(hours=hour - 12)


def test_keep_last_daily_weekly_monthly() -> None:
    vs = [Candidate(id=f"d{n}h{h}", created=day(n, h)) for n in range(70) for h in (1, 20)]
    keep = decide(vs, KeepPolicy(last=3, daily=5, weekly=3, monthly=2), now=NOW)
    kept = {v for v, r in keep.items() if r}
    assert {"d0h20", "d0h1", "d1h20"} <= kept  # last 3
    assert {f"d{n}h20" for n in range(5)} <= kept  # newest of each of 5 days
    assert "d1h1" not in kept and "d69h1" not in kept
    assert len(kept) < len(vs)


def test_protection_time_always_wins() -> None:
    vs = [Candidate(id="old", created=day(400), protected_until=NOW + timedelta(days=1)),
          Candidate(id="expired", created=day(300), protected_until=NOW - timedelta(days=1)),
          Candidate(id="new", created=day(0))]
    keep = decide(vs, KeepPolicy(last=1), now=NOW)
    assert keep["old"] and keep["new"] and not keep["expired"]

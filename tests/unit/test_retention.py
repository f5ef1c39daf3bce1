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


def test_weekly_keeps_the_newest_of_each_iso_week() -> None:
    # NOW is Friday 2026-11-27 (ISO week 48); two versions a day for 70 days
    vs = [Candidate(id=f"d{n}h{h}", created=day(n, h)) for n in range(70) for h in (1, 20)]
    keep = decide(vs, KeepPolicy(weekly=3), now=NOW)
    kept = {v for v, r in keep.items() if r}
    # the newest of week 48 (today, 20:00), of week 47 (Sunday 22 Nov = 5 days ago) and of
    # week 46 (Sunday 15 Nov = 12 days ago), nothing else
    assert kept == {"d0h20", "d5h20", "d12h20"}
    assert keep["d5h20"] == ["weekly 2026-W47"]


def test_monthly_keeps_the_newest_of_each_month() -> None:
    vs = [Candidate(id=f"d{n}h{h}", created=day(n, h)) for n in range(70) for h in (1, 20)]
    keep = decide(vs, KeepPolicy(monthly=3), now=NOW)
    kept = {v for v, r in keep.items() if r}
    # November (today), October (31 Oct = 27 days ago), September (30 Sep = 58 days ago)
    assert kept == {"d0h20", "d27h20", "d58h20"}
    assert keep["d58h20"] == ["monthly 2026-09"]


def test_rules_add_up_and_a_version_says_every_reason() -> None:
    vs = [Candidate(id=f"d{n}h{h}", created=day(n, h)) for n in range(70) for h in (1, 20)]
    keep = decide(vs, KeepPolicy(last=1, daily=1, weekly=1, monthly=1), now=NOW)
    assert keep["d0h20"] == ["last 1", "daily 2026-11-27", "weekly 2026-W48", "monthly 2026-11"]
    assert sum(bool(r) for r in keep.values()) == 1

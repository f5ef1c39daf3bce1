"""Which versions to keep: protection time first, then keep-last/daily/weekly/monthly.

The rules of restic's `forget`: a version is kept if any rule keeps it; each
daily/weekly/monthly rule keeps the newest version of each of its N most recent periods.
A protected version (protection time not yet passed) is always kept, whatever the rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field


class KeepPolicy(BaseModel):
    last: int = Field(0, ge=0)
    daily: int = Field(0, ge=0)
    weekly: int = Field(0, ge=0)
    monthly: int = Field(0, ge=0)

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


class Candidate(BaseModel):
    id: str
    created: datetime
    protected_until: datetime | None = None


def decide(versions: list[Candidate], policy: KeepPolicy,
           now: datetime | None = None) -> dict[str, list[str]]:
    """version id → reasons to keep it (an empty list means: forget it)."""
    now = now or datetime.now(UTC)
    newest_first = sorted(versions, key=lambda v: v.created, reverse=True)
    reasons: dict[str, list[str]] = {v.id: [] for v in versions}
    for i, v in enumerate(newest_first):
        if i < policy.last:
            reasons[v.id].append(f"last {policy.last}")
        until = v.protected_until
        if until is not None and (until if until.tzinfo else until.replace(tzinfo=UTC)) > now:
            reasons[v.id].append(f"protected until {until:%Y-%m-%d %H:%M}")
    periods = (("daily", policy.daily, "%Y-%m-%d"), ("weekly", policy.weekly, "%G-W%V"),
               ("monthly", policy.monthly, "%Y-%m"))
    for name, count, fmt in periods:
        seen: set[str] = set()
        for v in newest_first:
            if len(seen) >= count:
                break
            bucket = v.created.strftime(fmt)
            if bucket not in seen:
                seen.add(bucket)
                reasons[v.id].append(f"{name} {bucket}")
    return reasons

"""Which recovery points a policy keeps, and which expire: the grandfather-father-son rule.

:func:`select` is pure and deterministic; its rule is written down in ``docs/retention.md``.
In short, with ``today`` the calendar day of ``now`` in the policy's time zone and a day's
*daily point* the latest scheduled point of that day (ties: the greatest id):

* **daily** (N days): the daily point of each of the N calendar days ending today;
* **weekly** (N weeks): the daily point of each weekly-retention day (default Sunday) among the
  7·N calendar days ending today;
* **monthly** (N months): the first scheduled point of each of the N calendar months ending with
  the current one (ties: the smallest id);
* **yearly** (N years): the first scheduled point of each of the N calendar years ending with the
  current one;
* a day is judged once it is over: while it lasts (and for any later day), a daily or weekly tier
  that would keep that day's daily point keeps *every* point of the day, so hourly and repeated
  backups are not deleted before the day ends;
* ad-hoc points (``retain_until`` set, "backup now") ignore the tiers: kept while
  ``now < retain_until``;
* the newest point (greatest ``(time, id)``) is always kept;
* every other point expires.

Kept for N days / weeks / months / years means until the policy time zone's midnight that
starts day D+N (D+7·N; the first day of month M+N; 1 January of year Y+N).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Sequence
from zoneinfo import ZoneInfo

from haven.domain.schedule import (
    DEFAULT_POLICY_RETENTION,
    DEFAULT_POLICY_SCHEDULE,
    Retention,
    Schedule,
    local_midnight,
    zone,
)

__all__ = [
    "ON_DEMAND_RETENTION_DAYS",
    "PointRef",
    "RetentionDecision",
    "select",
    "Retention",
    "Schedule",
    "DEFAULT_POLICY_SCHEDULE",
    "DEFAULT_POLICY_RETENTION",
    "DAILY",
    "WEEKLY",
    "MONTHLY",
    "YEARLY",
    "ADHOC",
    "NEWEST",
    "REASONS",
]

UTC = timezone.utc

DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
YEARLY = "yearly"
#: an on-demand ("backup now") point given no retain-until is kept this many days (Azure Backup's default)
ON_DEMAND_RETENTION_DAYS = 30

ADHOC = "adhoc"  # a "backup now" point before its retain_until
NEWEST = "newest"  # the newest point of the item, whatever its age
#: Every reason a point can be kept for, in the order they are listed in ``RetentionDecision.keep``.
REASONS = (DAILY, WEEKLY, MONTHLY, YEARLY, ADHOC, NEWEST)


@dataclass(frozen=True)
class PointRef:
    """What retention needs to know of a recovery point."""

    id: str
    time: datetime  # aware
    retain_until: datetime | None = None  # ad-hoc ("backup now") points: kept exactly until then, ignoring tiers

    @property
    def adhoc(self) -> bool:
        return self.retain_until is not None


@dataclass(frozen=True)
class RetentionDecision:
    #: point id -> the reasons that keep it (a subset of REASONS, in that order); oldest point first.
    keep: dict[str, list[str]] = field(default_factory=dict)
    #: ids of the points to delete, oldest first.
    expire: list[str] = field(default_factory=list)
    #: kept point id -> when it expires if no other point comes or goes (the latest expiry of its
    #: reasons; None when only the newest-point rule keeps it).
    expiry: dict[str, datetime | None] = field(default_factory=dict)

    @property
    def kept(self) -> list[str]:
        return list(self.keep)


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _day_after(day: date, days: int) -> date | None:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def select(points: Sequence[PointRef], retention: Retention, now: datetime, tz: str = "UTC") -> RetentionDecision:
    """Decide which of one item's ``points`` ``retention`` keeps at ``now`` (see the module's rule)."""
    retention.validate()
    zi: ZoneInfo = zone(tz)
    now = _aware(now, "now")
    today = now.astimezone(zi).date()

    order = sorted(points, key=lambda p: (_aware(p.time, f"time of point {p.id!r}"), p.id))
    ids = [p.id for p in order]
    if len(set(ids)) != len(ids):
        raise ValueError("point ids must be unique")

    reasons: dict[str, set[str]] = defaultdict(set)
    until: dict[str, list[datetime | None]] = defaultdict(list)  # None: unbounded (beyond date range)

    def keep(pid: str, reason: str, expires: datetime | None) -> None:
        reasons[pid].add(reason)
        until[pid].append(expires)

    def midnight(day: date | None) -> datetime | None:
        return None if day is None else local_midnight(day, zi)

    by_day: dict[date, list[PointRef]] = defaultdict(list)  # ascending (time, id) inside a day
    for p in order:
        if p.retain_until is None:
            by_day[p.time.astimezone(zi).date()].append(p)

    # daily and weekly: the day's latest point; the whole day while it is not over
    day_tiers: list[tuple[str, int, tuple[int, ...] | None]] = []
    if retention.daily_days is not None:
        day_tiers.append((DAILY, retention.daily_days, None))
    if retention.weekly_weeks is not None:
        day_tiers.append((WEEKLY, 7 * retention.weekly_weeks, tuple(retention.weekly_days)))
    for tier, span, weekdays in day_tiers:
        for day, day_points in by_day.items():
            if weekdays is not None and day.weekday() not in weekdays:
                continue
            if (today - day).days >= span:
                continue
            latest = day_points[-1]
            keep(latest.id, tier, midnight(_day_after(day, span)))
            if day >= today:  # the day is not over: its daily point is not known yet
                for p in day_points[:-1]:
                    keep(p.id, tier, midnight(_day_after(day, 1)))

    # monthly and yearly: the first point of the month / year
    if retention.monthly_months is not None or retention.yearly_years is not None:
        first_of_month: dict[int, PointRef] = {}
        first_of_year: dict[int, PointRef] = {}
        for day in sorted(by_day):
            first = by_day[day][0]
            first_of_month.setdefault(_month_index(day), first)
            first_of_year.setdefault(day.year, first)
        if retention.monthly_months is not None:
            n, current = retention.monthly_months, _month_index(today)
            for index, p in first_of_month.items():
                if current - index < n:
                    end = index + n
                    keep(p.id, MONTHLY, midnight(_month_start(end)) if end // 12 <= 9999 else None)
        if retention.yearly_years is not None:
            n = retention.yearly_years
            for year, p in first_of_year.items():
                if today.year - year < n:
                    keep(p.id, YEARLY, midnight(date(year + n, 1, 1)) if year + n <= 9999 else None)

    # ad-hoc points: exactly until retain_until
    for p in order:
        if p.retain_until is not None:
            ru = _aware(p.retain_until, f"retain_until of point {p.id!r}")
            if now < ru:
                keep(p.id, ADHOC, ru)

    # the newest point, always
    if order:
        reasons[order[-1].id].add(NEWEST)

    decision_keep: dict[str, list[str]] = {}
    expiry: dict[str, datetime | None] = {}
    expire: list[str] = []
    for p in order:
        why = reasons.get(p.id)
        if not why:
            expire.append(p.id)
            continue
        decision_keep[p.id] = [r for r in REASONS if r in why]
        ends = until.get(p.id, [])
        if not ends or any(e is None for e in ends):
            expiry[p.id] = None
        else:
            expiry[p.id] = max(e for e in ends if e is not None)
    return RetentionDecision(keep=decision_keep, expire=expire, expiry=expiry)

"""Retention: validation, the rule of select(), and years of simulated backups with a fake clock."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haven.clock import FakeClock
from haven.domain import errors as E
from haven.domain.retention import (
    DEFAULT_POLICY_RETENTION,
    DEFAULT_POLICY_SCHEDULE,
    PointRef,
    Retention,
    RetentionDecision,
    Schedule,
    select,
)
from haven.errors import UserError

UTC = timezone.utc


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


# ------------------------------------------------------------------ validation


def test_defaults() -> None:
    assert DEFAULT_POLICY_SCHEDULE == Schedule("daily", (time(22, 30),), timezone="UTC")
    assert DEFAULT_POLICY_RETENTION == Retention(daily_days=30)
    DEFAULT_POLICY_RETENTION.validate_against(DEFAULT_POLICY_SCHEDULE)


@pytest.mark.parametrize(
    "kwargs,tier",
    [
        (dict(daily_days=6), "daily"),
        (dict(daily_days=10000), "daily"),
        (dict(daily_days=0), "daily"),
        (dict(daily_days=7.5), "daily"),
        (dict(daily_days=True), "daily"),
        (dict(daily_days="30"), "daily"),
        (dict(weekly_weeks=0), "weekly"),
        (dict(weekly_weeks=5164), "weekly"),
        (dict(monthly_months=0), "monthly"),
        (dict(monthly_months=1189), "monthly"),
        (dict(yearly_years=0), "yearly"),
        (dict(yearly_years=100), "yearly"),
    ],
)
def test_retention_range_invalid(kwargs: dict, tier: str) -> None:
    with pytest.raises(E.RetentionRangeInvalid) as info:
        Retention(**kwargs).validate()
    assert info.value.code == "UserErrorRetentionRangeInvalid"
    assert info.value.fields["tier"] == tier
    assert tier in info.value.text and "{" not in info.value.fix


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(daily_days=7),
        dict(daily_days=9999),
        dict(daily_days=None, weekly_weeks=1),
        dict(daily_days=None, weekly_weeks=5163),
        dict(daily_days=None, monthly_months=1188),
        dict(daily_days=None, yearly_years=99),
        dict(daily_days=7, weekly_weeks=4, weekly_days=(0, 6), monthly_months=12, yearly_years=1),
    ],
)
def test_retention_range_edges_valid(kwargs: dict) -> None:
    Retention(**kwargs).validate()


def test_retention_needs_a_tier() -> None:
    with pytest.raises(E.RetentionNoTier) as info:
        Retention(daily_days=None).validate()
    assert info.value.code == "UserErrorRetentionNoTier"


@pytest.mark.parametrize("days", [(), (7,), (-1,), (1, 1), ("x",), (True,)])
def test_retention_weekdays_invalid(days: tuple) -> None:
    with pytest.raises(E.RetentionWeekdaysInvalid) as info:
        Retention(weekly_weeks=4, weekly_days=days).validate()
    assert info.value.code == "UserErrorRetentionWeekdaysInvalid"


DAILY = Schedule("daily", (time(22, 30),))
HOURLY = Schedule("hourly", (time(8),), hourly_interval=4, hourly_window_hours=12)
WEEKLY = Schedule("weekly", (time(1),), weekdays=(2, 6))


@pytest.mark.parametrize(
    "retention,schedule,error,code",
    [
        (Retention(daily_days=None, weekly_weeks=4), DAILY, E.DailyRetentionRequired, "UserErrorDailyRetentionRequired"),
        (Retention(daily_days=None, monthly_months=4), HOURLY, E.DailyRetentionRequired, "UserErrorDailyRetentionRequired"),
        (Retention(daily_days=30, weekly_weeks=4), WEEKLY, E.DailyRetentionNotAllowed, "UserErrorDailyRetentionNotAllowed"),
        (Retention(daily_days=None, monthly_months=4), WEEKLY, E.WeeklyRetentionRequired, "UserErrorWeeklyRetentionRequired"),
        (
            Retention(daily_days=None, weekly_weeks=4, weekly_days=(0,)),
            WEEKLY,
            E.WeeklyRetentionDaysMismatch,
            "UserErrorWeeklyRetentionDaysMismatch",
        ),
        (Retention(daily_days=3), DAILY, E.RetentionRangeInvalid, "UserErrorRetentionRangeInvalid"),
        (Retention(), Schedule("daily", (time(1, 15),)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    ],
)
def test_validate_against_schedule(retention: Retention, schedule: Schedule, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        retention.validate_against(schedule)
    assert info.value.code == code
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize(
    "retention,schedule",
    [
        (Retention(daily_days=7, weekly_weeks=4, monthly_months=12, yearly_years=2), DAILY),
        (Retention(daily_days=7), HOURLY),
        (Retention(daily_days=None, weekly_weeks=4, weekly_days=(6,), yearly_years=10), WEEKLY),
        (Retention(daily_days=None, weekly_weeks=4, weekly_days=(2, 6), monthly_months=3), WEEKLY),
    ],
)
def test_validate_against_schedule_valid(retention: Retention, schedule: Schedule) -> None:
    retention.validate_against(schedule)


def test_retention_round_trip() -> None:
    r = Retention(daily_days=7, weekly_weeks=4, weekly_days=(0, 6), monthly_months=12, yearly_years=2)
    d = r.to_dict()
    assert d == {"daily_days": 7, "weekly_weeks": 4, "weekly_days": [0, 6], "monthly_months": 12, "yearly_years": 2}
    assert Retention.from_dict(json.loads(json.dumps(d))) == r
    assert Retention.from_dict(DEFAULT_POLICY_RETENTION.to_dict()) == DEFAULT_POLICY_RETENTION
    assert Retention.from_dict({"weekly_weeks": 3, "weekly_days": ["Sunday"]}) == Retention(
        daily_days=None, weekly_weeks=3
    )


@pytest.mark.parametrize(
    "payload,code",
    [
        ("30", "UserErrorRetentionPolicyInvalid"),
        ({"daily_days": 30, "hourly_hours": 3}, "UserErrorRetentionPolicyInvalid"),
        ({}, "UserErrorRetentionNoTier"),
        ({"daily_days": "thirty"}, "UserErrorRetentionRangeInvalid"),
        ({"daily_days": 30, "weekly_days": "Sunday"}, "UserErrorRetentionWeekdaysInvalid"),
        ({"daily_days": 30, "weekly_days": ["Caturday"]}, "UserErrorRetentionWeekdaysInvalid"),
    ],
)
def test_retention_from_dict_rejects(payload: object, code: str) -> None:
    with pytest.raises(UserError) as info:
        Retention.from_dict(payload)  # type: ignore[arg-type]
    assert info.value.code == code


@settings(max_examples=100, deadline=None)
@given(
    daily=st.none() | st.integers(7, 9999),
    weekly=st.none() | st.integers(1, 5163),
    days=st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True),
    monthly=st.none() | st.integers(1, 1188),
    yearly=st.none() | st.integers(1, 99),
)
def test_retention_round_trip_property(daily, weekly, days, monthly, yearly) -> None:  # type: ignore[no-untyped-def]
    r = Retention(daily, weekly, tuple(days), monthly, yearly)
    if not r.tiers():
        return
    assert Retention.from_dict(json.loads(json.dumps(r.to_dict()))) == r


# ------------------------------------------------------------------ select: the rule on small cases


def pts(*times: datetime) -> list[PointRef]:
    return [PointRef(f"p{i:04d}", t) for i, t in enumerate(times)]


def test_empty() -> None:
    d = select([], Retention(), utc(2024, 1, 1))
    assert d == RetentionDecision({}, [], {})


def test_newest_is_kept_even_when_every_tier_is_done() -> None:
    points = pts(utc(2020, 1, 1, 22, 30), utc(2020, 1, 2, 22, 30))
    d = select(points, Retention(daily_days=7), utc(2024, 1, 1))
    assert d.keep == {"p0001": ["newest"]}
    assert d.expire == ["p0000"]
    assert d.expiry == {"p0001": None}


def test_daily_keeps_the_latest_point_of_each_day_for_n_calendar_days() -> None:
    points = pts(
        utc(2024, 1, 1, 6), utc(2024, 1, 1, 22, 30),  # 1 Jan: the 22:30 one is the daily point
        utc(2024, 1, 2, 22, 30),
        utc(2024, 1, 8, 22, 30),
    )
    r = Retention(daily_days=7)
    d = select(points, r, utc(2024, 1, 7, 23))  # 7 days: 1..7 January (and 8 Jan, still to come)
    assert d.keep == {"p0001": ["daily"], "p0002": ["daily"], "p0003": ["daily", "newest"]}
    assert d.expire == ["p0000"]
    assert d.expiry == {"p0001": utc(2024, 1, 8), "p0002": utc(2024, 1, 9), "p0003": utc(2024, 1, 15)}
    d = select(points, r, utc(2024, 1, 8, 0, 0))  # 2..8 January
    assert d.expire == ["p0000", "p0001"]


def test_the_current_day_is_kept_whole_until_it_ends() -> None:
    points = pts(utc(2024, 1, 1, 0), utc(2024, 1, 1, 4), utc(2024, 1, 1, 8))
    r = Retention(daily_days=7)
    d = select(points, r, utc(2024, 1, 1, 9))
    assert d.keep == {"p0000": ["daily"], "p0001": ["daily"], "p0002": ["daily", "newest"]}
    assert d.expiry["p0000"] == d.expiry["p0001"] == utc(2024, 1, 2)
    assert d.expiry["p0002"] == utc(2024, 1, 8)
    d = select(points, r, utc(2024, 1, 2))
    assert list(d.keep) == ["p0002"] and d.expire == ["p0000", "p0001"]


def test_calendar_days_are_the_policy_time_zone_s() -> None:
    # 23:30 UTC on 1 Jan is 00:30 on 2 Jan in Berlin: two points, two Berlin days
    points = pts(utc(2024, 1, 1, 22, 30), utc(2024, 1, 1, 23, 30))
    r = Retention(daily_days=7)
    assert select(points, r, utc(2024, 1, 3), "UTC").expire == ["p0000"]
    d = select(points, r, utc(2024, 1, 3), "Europe/Berlin")
    assert d.expire == [] and d.expiry["p0000"] == datetime(2024, 1, 8, tzinfo=ZoneInfo("Europe/Berlin"))


def test_weekly_monthly_yearly() -> None:
    # daily points from Thu 1 Feb 2024 to Sun 31 Mar 2024
    points = [PointRef(f"{d:%Y-%m-%d}", datetime.combine(d, time(22, 30), UTC)) for d in _days(date(2024, 2, 1), date(2024, 3, 31))]
    r = Retention(daily_days=None, weekly_weeks=2, weekly_days=(6,), monthly_months=2, yearly_years=1)
    d = select(points, r, utc(2024, 3, 31, 23))
    assert d.keep == {
        "2024-02-01": ["monthly", "yearly"],
        "2024-03-01": ["monthly"],
        "2024-03-24": ["weekly"],
        "2024-03-31": ["weekly", "newest"],
    }
    assert d.expiry == {
        "2024-02-01": utc(2025, 1, 1),
        "2024-03-01": utc(2024, 5, 1),
        "2024-03-24": utc(2024, 4, 7),
        "2024-03-31": utc(2024, 4, 14),
    }
    # a month later February has left the 2-month window; only the yearly tier keeps its point
    later = select(points, r, utc(2024, 4, 30))
    assert later.keep["2024-02-01"] == ["yearly"] and "2024-03-24" not in later.keep


def test_adhoc_points_ignore_the_tiers() -> None:
    scheduled = pts(utc(2024, 1, 1, 22, 30), utc(2024, 1, 3, 22, 30))
    adhoc = PointRef("adhoc", utc(2024, 1, 2, 12), retain_until=utc(2024, 3, 1))
    r = Retention(daily_days=7, monthly_months=3)
    d = select([*scheduled, adhoc], r, utc(2024, 1, 4))
    assert d.keep["adhoc"] == ["adhoc"] and d.expiry["adhoc"] == utc(2024, 3, 1)
    # it is not the daily point of 2 Jan nor anything else
    assert select([*scheduled, adhoc], r, utc(2024, 2, 29, 23, 59)).keep["adhoc"] == ["adhoc"]
    assert "adhoc" in select([*scheduled, adhoc], r, utc(2024, 3, 1)).expire
    # an ad-hoc point expires even if it is the only point of its month...
    lone = PointRef("lone", utc(2024, 5, 2), retain_until=utc(2024, 5, 3))
    assert "lone" in select([*scheduled, lone, PointRef("new", utc(2024, 5, 4))], r, utc(2024, 5, 4)).expire
    # ...and an expired ad-hoc point that is the newest is kept as the newest
    assert select([*scheduled, lone], r, utc(2024, 6, 1)).keep["lone"] == ["newest"]


def test_deterministic_ties_and_order() -> None:
    t = utc(2024, 1, 1, 22, 30)
    points = [PointRef("b", t), PointRef("a", t), PointRef("c", t - timedelta(hours=1))]
    r = Retention(daily_days=7, monthly_months=1)
    d = select(points, r, utc(2024, 1, 5))
    assert d.keep == {"c": ["monthly"], "b": ["daily", "newest"]}  # first of month: c; latest of day: b (greatest id)
    assert d.expire == ["a"]
    for _ in range(20):
        random.shuffle(points)
        assert select(points, r, utc(2024, 1, 5)) == d


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        select(pts(utc(2024, 1, 1)), Retention(), datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        select([PointRef("x", datetime(2024, 1, 1))], Retention(), utc(2024, 1, 1))
    with pytest.raises(ValueError):
        select([PointRef("x", utc(2024, 1, 1)), PointRef("x", utc(2024, 1, 2))], Retention(), utc(2024, 1, 3))
    with pytest.raises(E.TimeZoneInvalid):
        select([], Retention(), utc(2024, 1, 1), tz="Mars/Base")
    with pytest.raises(E.RetentionNoTier):
        select([], Retention(daily_days=None), utc(2024, 1, 1))


# ------------------------------------------------------------------ simulation with a fake clock


def _days(first: date, last: date):  # type: ignore[no-untyped-def]
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)


@dataclass
class Store:
    """What the real service does: keeps points, applies select, deletes what expires."""

    retention: Retention
    tz: str
    clock: FakeClock
    points: dict[str, PointRef] = field(default_factory=dict)
    created: list[PointRef] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    announced: dict[str, datetime] = field(default_factory=dict)  # the earliest expiry ever announced
    seq: int = 0

    def backup(self, retain_until: datetime | None = None) -> PointRef:
        self.seq += 1
        p = PointRef(f"rp-{self.seq:06d}", self.clock.now(), retain_until)
        self.points[p.id] = p
        self.created.append(p)
        return p

    def apply(self) -> RetentionDecision:
        now = self.clock.now()
        current = list(self.points.values())
        d = select(current, self.retention, now, self.tz)
        # the decision covers every point exactly once
        assert set(d.keep).isdisjoint(d.expire)
        assert set(d.keep) | set(d.expire) == set(self.points)
        assert set(d.expiry) == set(d.keep)
        # never the newest point
        newest = max(current, key=lambda p: (p.time, p.id)) if current else None
        if newest:
            assert newest.id in d.keep and newest.id not in d.expire
        for pid, reasons in d.keep.items():
            e = d.expiry[pid]
            assert reasons
            if e is not None:
                assert e > now, (pid, e, now)
                self.announced[pid] = min(e, self.announced.get(pid, e))
            # never kept past an expiry it was once given (unless it is the newest point)
            if pid in self.announced and now >= self.announced[pid]:
                assert reasons == ["newest"], (pid, reasons, self.announced[pid], now)
        # ad-hoc points: exactly until retain_until
        for p in current:
            if p.retain_until is not None:
                if now < p.retain_until:
                    assert "adhoc" in d.keep[p.id]
                elif p is not newest:
                    assert p.id in d.expire
        for pid in d.expire:
            assert pid not in self.deleted
            del self.points[pid]
            self.deleted.add(pid)
        # a deleted point never comes back
        assert self.deleted.isdisjoint(self.points)
        return d


def expected_survivors(created: list[PointRef], r: Retention, now: datetime, tz: str) -> set[str]:
    """The rule of docs/retention.md, stated point by point (independently of select's grouping)."""
    zi = ZoneInfo(tz)
    today = now.astimezone(zi).date()
    sched = [p for p in created if p.retain_until is None]
    day = {p.id: p.time.astimezone(zi).date() for p in sched}
    key = {p.id: (p.time, p.id) for p in created}
    last_of_day: dict[date, tuple] = {}
    first_of_month: dict[tuple[int, int], tuple] = {}
    first_of_year: dict[int, tuple] = {}
    for p in sched:
        d = day[p.id]
        last_of_day[d] = max(last_of_day.get(d, key[p.id]), key[p.id])
        first_of_month[(d.year, d.month)] = min(first_of_month.get((d.year, d.month), key[p.id]), key[p.id])
        first_of_year[d.year] = min(first_of_year.get(d.year, key[p.id]), key[p.id])
    out: set[str] = set()
    for p in sched:
        d = day[p.id]
        is_last_of_day = last_of_day[d] == key[p.id]
        day_open = d >= today
        if r.daily_days and (today - d).days < r.daily_days and (is_last_of_day or day_open):
            out.add(p.id)
        if r.weekly_weeks and d.weekday() in r.weekly_days and (today - d).days < 7 * r.weekly_weeks:
            if is_last_of_day or day_open:
                out.add(p.id)
        if r.monthly_months:
            months_ago = (today.year - d.year) * 12 + today.month - d.month
            if first_of_month[(d.year, d.month)] == key[p.id] and months_ago < r.monthly_months:
                out.add(p.id)
        if r.yearly_years:
            if first_of_year[d.year] == key[p.id] and today.year - d.year < r.yearly_years:
                out.add(p.id)
    for p in created:
        if p.retain_until is not None and now < p.retain_until:
            out.add(p.id)
    if created:
        out.add(max(created, key=lambda p: key[p.id]).id)
    return out


def run(schedule: Schedule, r: Retention, start: datetime, end: datetime, apply_every_backup: bool = False,
        adhoc: list[tuple[datetime, timedelta]] = ()) -> Store:  # type: ignore[assignment]
    """Back up on every slot of ``schedule`` from ``start`` to ``end``; apply retention once a
    simulated day (at the slot) or after every backup, and at ``end``."""
    clock = FakeClock(start)
    store = Store(r, schedule.timezone, clock)
    adhoc = sorted(adhoc)
    last_applied: date | None = None
    for slot in schedule.slots_between(start, end):
        while adhoc and adhoc[0][0] <= slot:
            at, keep_for = adhoc.pop(0)
            clock.set(at)
            store.backup(retain_until=at + keep_for)
        clock.set(slot)
        store.backup()
        if apply_every_backup or slot.date() != last_applied:
            store.apply()
            last_applied = slot.date()
    clock.set(end)
    store.apply()
    return store


def test_a_year_of_daily_backups_keeps_exactly_the_right_points() -> None:
    """The issue's acceptance case: daily at 22:30 UTC for 2023, daily=7, weekly=4, monthly=12, yearly=2."""
    r = Retention(daily_days=7, weekly_weeks=4, weekly_days=(6,), monthly_months=12, yearly_years=2)
    end = utc(2023, 12, 31, 23, 0)
    store = run(DEFAULT_POLICY_SCHEDULE, r, utc(2023, 1, 1), end)
    assert len(store.created) == 365
    kept = sorted(p.time.date() for p in store.points.values())
    # from the calendar: the last 7 days, the Sundays of the last 28 days, the 1st of each month
    daily = {date(2023, 12, 31) - timedelta(days=i) for i in range(7)}
    sundays = {date(2023, 12, 31) - timedelta(weeks=i) for i in range(4)}  # 31 Dec 2023 is a Sunday
    firsts = {date(2023, 1, 1) + relativedelta(months=i) for i in range(12)}
    assert kept == sorted(daily | sundays | firsts)
    assert kept == [
        date(2023, m, 1) for m in range(1, 13)
    ] + [date(2023, 12, 10), date(2023, 12, 17), date(2023, 12, 24), date(2023, 12, 25), date(2023, 12, 26),
         date(2023, 12, 27), date(2023, 12, 28), date(2023, 12, 29), date(2023, 12, 30), date(2023, 12, 31)]
    assert len(kept) == 22
    # the same once more, a year later: 2023's first point now only kept by the yearly tier
    store2 = run(DEFAULT_POLICY_SCHEDULE, r, utc(2023, 1, 1), utc(2024, 12, 31, 23))
    by_date = {p.time.date(): p.id for p in store2.points.values()}
    assert date(2023, 1, 1) in by_date and date(2024, 1, 1) in by_date
    assert not any(d.year == 2023 and d != date(2023, 1, 1) for d in by_date)
    decision = select(list(store2.points.values()), r, utc(2024, 12, 31, 23))
    assert decision.keep[by_date[date(2023, 1, 1)]] == ["yearly"]
    assert decision.expiry[by_date[date(2023, 1, 1)]] == utc(2025, 1, 1)
    assert decision.keep[by_date[date(2024, 1, 1)]] == ["monthly", "yearly"]
    # one more day: 2023 leaves the 2-year window
    store2.clock.set(utc(2025, 1, 1, 0, 0))
    store2.apply()
    assert date(2023, 1, 1) not in {p.time.date() for p in store2.points.values()}


def test_a_year_of_hourly_backups() -> None:
    s = Schedule("hourly", (time(0),), hourly_interval=4, hourly_window_hours=24, timezone="Europe/Berlin")
    r = Retention(daily_days=7, monthly_months=3)
    store = run(s, r, utc(2024, 1, 1), utc(2024, 12, 31, 10), apply_every_backup=True)
    tz = ZoneInfo("Europe/Berlin")
    local_kept = sorted(p.time.astimezone(tz) for p in store.points.values())
    # today (31 Dec, until 11:00 local): every point so far; the 6 days before: their 20:00 point;
    # the first point of October, November, December: 00:00 on the 1st
    assert [x.replace(tzinfo=None) for x in local_kept] == (
        [datetime(2024, m, 1, 0) for m in (10, 11, 12)]
        + [datetime(2024, 12, d, 20) for d in range(25, 31)]
        + [datetime(2024, 12, 31, h) for h in (0, 4, 8)]
    )


def test_weekly_schedule_for_three_years() -> None:
    s = Schedule("weekly", (time(1, 0),), weekdays=(6,), timezone="America/New_York")
    r = Retention(daily_days=None, weekly_weeks=10, weekly_days=(6,), monthly_months=6, yearly_years=3)
    r.validate_against(s)
    end = utc(2026, 6, 30)
    store = run(s, r, utc(2023, 6, 1), end)
    assert {p.id for p in store.points.values()} == expected_survivors(store.created, r, end, s.timezone)
    tz = ZoneInfo(s.timezone)
    kept = sorted(p.time.astimezone(tz).date() for p in store.points.values())
    sundays = [d for d in _days(date(2023, 6, 1), date(2026, 6, 29)) if d.weekday() == 6]
    last10 = sundays[-10:]
    first_sundays = {d for d in sundays if d.day <= 7}
    months = {d for d in first_sundays if (2026 - d.year) * 12 + 6 - d.month < 6}
    years = {min(d for d in sundays if d.year == y) for y in (2024, 2025, 2026)}
    assert kept == sorted(set(last10) | months | years)


def test_adhoc_points_in_a_simulation() -> None:
    adhoc = [(utc(2024, 2, 10, 12), timedelta(days=100)), (utc(2024, 3, 5, 9), timedelta(days=3))]
    r = Retention(daily_days=7)
    store = run(DEFAULT_POLICY_SCHEDULE, r, utc(2024, 1, 1), utc(2024, 6, 30), adhoc=adhoc)
    # Store.apply checked at every step that they were kept exactly until retain_until
    adhoc_ids = [p.id for p in store.created if p.retain_until]
    assert len(adhoc_ids) == 2 and all(i in store.deleted for i in adhoc_ids)
    store2 = run(DEFAULT_POLICY_SCHEDULE, r, utc(2024, 1, 1), utc(2024, 5, 20), adhoc=adhoc)
    assert [p.id for p in store2.points.values() if p.retain_until] == [adhoc_ids[0]]


# ------------------------------------------------------------------ properties over simulated years

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
half_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 30]))


@st.composite
def policies(draw: st.DrawFn) -> tuple[Schedule, Retention, int]:
    tz = draw(st.sampled_from(ZONES))
    kind = draw(st.sampled_from(["daily", "daily", "weekly", "hourly"]))
    monthly = draw(st.none() | st.integers(1, 14))
    yearly = draw(st.none() | st.integers(1, 3))
    weekly = draw(st.none() | st.integers(1, 8))
    if kind == "weekly":
        weekdays = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True)))
        s = Schedule("weekly", tuple(draw(st.lists(half_hours, min_size=1, max_size=2, unique=True))), weekdays=weekdays, timezone=tz)
        wdays = tuple(draw(st.lists(st.sampled_from(weekdays), min_size=1, unique=True)))
        r = Retention(daily_days=None, weekly_weeks=weekly or 1, weekly_days=wdays, monthly_months=monthly, yearly_years=yearly)
        span = draw(st.integers(30, 3 * 365))
    else:
        wdays = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=2, unique=True)))
        r = Retention(daily_days=draw(st.integers(7, 20)), weekly_weeks=weekly, weekly_days=wdays,
                      monthly_months=monthly, yearly_years=yearly)
        if kind == "hourly":
            interval = draw(st.sampled_from([6, 8, 12]))
            window = draw(st.sampled_from([w for w in range(4, 25) if w % interval == 0]))
            s = Schedule("hourly", (draw(half_hours),), hourly_interval=interval, hourly_window_hours=window, timezone=tz)
            span = draw(st.integers(10, 400))
        else:
            s = Schedule("daily", tuple(draw(st.lists(half_hours, min_size=1, max_size=2, unique=True))), timezone=tz)
            span = draw(st.integers(30, 5 * 365))
    r.validate_against(s)
    return s, r, span


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    policy=policies(),
    start=st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    every_backup=st.booleans(),
    adhoc=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 400)), max_size=3),
    end_offset_minutes=st.integers(0, 24 * 60),
)
def test_simulated_years_keep_exactly_the_documented_points(  # type: ignore[no-untyped-def]
    policy, start, every_backup, adhoc, end_offset_minutes
) -> None:
    schedule, r, span = policy
    end = start + timedelta(days=span, minutes=end_offset_minutes)
    adhoc_at = [(start + (end - start) * f, timedelta(days=k, hours=3)) for f, k in adhoc]
    store = run(schedule, r, start, end, apply_every_backup=every_backup, adhoc=adhoc_at)
    now = store.clock.now()
    survivors = {p.id for p in store.points.values()}
    # 1. exactly the documented rule, computed point by point over everything ever created
    assert survivors == expected_survivors(store.created, r, now, schedule.timezone)
    # 2. applying it incrementally (deleting as it goes) ends where one batch decision over all points does
    batch = select(store.created, r, now, schedule.timezone)
    assert set(batch.keep) == survivors
    # 3. deterministic: the same input in any order gives the same decision
    shuffled = list(store.points.values())
    random.Random(span).shuffle(shuffled)
    assert select(shuffled, r, now, schedule.timezone) == select(list(store.points.values()), r, now, schedule.timezone)
    # 4. a decision at a later time (no new backups) keeps a subset: nothing comes back
    later = select(store.created, r, now + timedelta(days=40), schedule.timezone)
    assert set(later.keep) <= set(batch.keep)
    # 5. every tier keeps no more than its count (+1 for the current, unfinished day/week/month)
    per: dict[str, int] = defaultdict(int)
    for reasons in batch.keep.values():
        for x in reasons:
            per[x] += 1
    if r.monthly_months:
        assert per["monthly"] <= r.monthly_months
    if r.yearly_years:
        assert per["yearly"] <= r.yearly_years


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(
        st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2024, 1, 1), timezones=st.just(UTC)),
        min_size=1, max_size=40,
    ),
    r=st.builds(
        Retention,
        daily_days=st.none() | st.integers(7, 60),
        weekly_weeks=st.none() | st.integers(1, 20),
        weekly_days=st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True).map(tuple),
        monthly_months=st.none() | st.integers(1, 24),
        yearly_years=st.none() | st.integers(1, 5),
    ),
    now=st.datetimes(min_value=datetime(2023, 6, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)),
    tz=st.sampled_from(ZONES),
)
def test_expiry_is_exact_for_arbitrary_points(times, r, now, tz) -> None:  # type: ignore[no-untyped-def]
    """Each announced expiry is the instant the point stops being kept (for the same set of points)."""
    if not r.tiers():
        r = Retention(daily_days=7)
    points = pts(*times)
    d = select(points, r, now, tz)
    assert {p.id for p in points if p.id in d.keep} == expected_survivors(points, r, now, tz)
    for pid, e in d.expiry.items():
        if e is None:
            assert d.keep[pid] == ["newest"]
            continue
        assert e > now
        just_before = select(points, r, e - timedelta(microseconds=1), tz)
        at = select(points, r, e, tz)
        assert pid in just_before.keep
        assert pid in at.expire or at.keep[pid] == ["newest"]

"""Schedules: validation (every rule, with its code), slot generation, DST, round-trip, properties."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haven.domain import errors as E
from haven.domain.schedule import (
    DEFAULT_POLICY_SCHEDULE,
    Schedule,
    localize,
)
from haven.errors import UserError

UTC = timezone.utc


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def local(s: datetime, tz: str) -> datetime:
    return s.astimezone(ZoneInfo(tz))


# ------------------------------------------------------------------ validation


VALID = [
    Schedule("daily", (time(22, 30),)),
    Schedule("daily", (time(0, 0), time(8, 30), time(23, 30)), timezone="Europe/Berlin"),
    Schedule("weekly", (time(1, 0),), weekdays=(6,), timezone="America/New_York"),
    Schedule("weekly", (time(1, 0), time(13, 0)), weekdays=(0, 2, 4)),
    Schedule("hourly", (time(8, 0),), hourly_interval=4, hourly_window_hours=12),
    Schedule("hourly", (time(0, 30),), hourly_interval=12, hourly_window_hours=24, timezone="Asia/Kolkata"),
    Schedule("hourly", (time(20, 0),), hourly_interval=6, hourly_window_hours=18),
    DEFAULT_POLICY_SCHEDULE,
]


@pytest.mark.parametrize("schedule", VALID, ids=lambda s: f"{s.frequency}-{s.timezone}")
def test_valid_schedules_pass(schedule: Schedule) -> None:
    schedule.validate()


H = dict(hourly_interval=4, hourly_window_hours=12)

INVALID = [
    # frequency
    (Schedule("monthly", (time(1, 0),)), E.ScheduleFrequencyInvalid, "UserErrorScheduleFrequencyInvalid"),
    (Schedule("", (time(1, 0),)), E.ScheduleFrequencyInvalid, "UserErrorScheduleFrequencyInvalid"),
    # times: count
    (Schedule("daily", ()), E.ScheduleTimeCountInvalid, "UserErrorScheduleTimeCountInvalid"),
    (
        Schedule("daily", (time(1), time(2), time(3), time(4))),
        E.ScheduleTimeCountInvalid,
        "UserErrorScheduleTimeCountInvalid",
    ),
    (Schedule("weekly", (), weekdays=(1,)), E.ScheduleTimeCountInvalid, "UserErrorScheduleTimeCountInvalid"),
    (Schedule("hourly", (time(1), time(2)), **H), E.ScheduleTimeCountInvalid, "UserErrorScheduleTimeCountInvalid"),
    (Schedule("hourly", (), **H), E.ScheduleTimeCountInvalid, "UserErrorScheduleTimeCountInvalid"),
    # times: boundaries, duplicates, types, time zones
    (Schedule("daily", (time(22, 15),)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", (time(22, 30, 5),)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", (time(22, 30, 0, 1),)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", (time(22, 30), time(22, 30))), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", ("25:00",)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", (2230,)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("daily", (time(1, tzinfo=UTC),)), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    (Schedule("hourly", (time(8, 45),), **H), E.InvalidScheduleTime, "UserErrorInvalidScheduleTime"),
    # weekdays
    (Schedule("weekly", (time(1),)), E.ScheduleWeekdaysInvalid, "UserErrorScheduleWeekdaysInvalid"),
    (Schedule("weekly", (time(1),), weekdays=(7,)), E.ScheduleWeekdaysInvalid, "UserErrorScheduleWeekdaysInvalid"),
    (Schedule("weekly", (time(1),), weekdays=(-1,)), E.ScheduleWeekdaysInvalid, "UserErrorScheduleWeekdaysInvalid"),
    (
        Schedule("weekly", (time(1),), weekdays=(True,)),
        E.ScheduleWeekdaysInvalid,
        "UserErrorScheduleWeekdaysInvalid",
    ),
    (
        Schedule("weekly", (time(1),), weekdays=(2, 2)),
        E.ScheduleWeekdaysInvalid,
        "UserErrorScheduleWeekdaysInvalid",
    ),
    (Schedule("daily", (time(1),), weekdays=(2,)), E.ScheduleWeekdaysInvalid, "UserErrorScheduleWeekdaysInvalid"),
    (
        Schedule("hourly", (time(1),), weekdays=(2,), **H),
        E.ScheduleWeekdaysInvalid,
        "UserErrorScheduleWeekdaysInvalid",
    ),
    # hourly interval
    (
        Schedule("hourly", (time(1),), hourly_interval=5, hourly_window_hours=10),
        E.HourlyIntervalInvalid,
        "UserErrorHourlyIntervalInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=None, hourly_window_hours=12),
        E.HourlyIntervalInvalid,
        "UserErrorHourlyIntervalInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=1, hourly_window_hours=12),
        E.HourlyIntervalInvalid,
        "UserErrorHourlyIntervalInvalid",
    ),
    (Schedule("daily", (time(1),), hourly_interval=4), E.HourlyIntervalInvalid, "UserErrorHourlyIntervalInvalid"),
    # hourly window
    (
        Schedule("hourly", (time(1),), hourly_interval=4, hourly_window_hours=None),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=4, hourly_window_hours=28),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=4, hourly_window_hours=0),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=8, hourly_window_hours=12),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    (
        Schedule("hourly", (time(1),), hourly_interval=12, hourly_window_hours=4),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    (
        Schedule("weekly", (time(1),), weekdays=(1,), hourly_window_hours=12),
        E.HourlyWindowInvalid,
        "UserErrorHourlyWindowInvalid",
    ),
    # time zone
    (Schedule("daily", (time(1),), timezone="Mars/Olympus"), E.TimeZoneInvalid, "UserErrorTimeZoneInvalid"),
    (Schedule("daily", (time(1),), timezone=""), E.TimeZoneInvalid, "UserErrorTimeZoneInvalid"),
    (Schedule("daily", (time(1),), timezone="../../etc/passwd"), E.TimeZoneInvalid, "UserErrorTimeZoneInvalid"),
    (Schedule("daily", (time(1),), timezone=5), E.TimeZoneInvalid, "UserErrorTimeZoneInvalid"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("schedule,error,code", INVALID, ids=[f"{i}-{c}" for i, (_, _, c) in enumerate(INVALID)])
def test_invalid_schedules_name_the_rule_and_the_fix(schedule: Schedule, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        schedule.validate()
    err = info.value
    assert isinstance(err, UserError)
    assert err.code == code
    assert err.http_status == 400
    assert err.text and "{" not in err.text  # the template was filled
    assert err.fix and "{" not in err.fix.replace("{{", "")
    # the API answers with it
    assert err.to_payload()["error"]["code"] == code
    json.dumps(err.to_payload())


def test_slots_refuse_an_invalid_schedule() -> None:
    with pytest.raises(E.InvalidScheduleTime):
        Schedule("daily", (time(1, 10),)).next_slot(utc(2024, 1, 1))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        DEFAULT_POLICY_SCHEDULE.next_slot(datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        list(DEFAULT_POLICY_SCHEDULE.slots_between(utc(2024, 1, 1), datetime(2024, 1, 2)))


def test_constructor_coerces_friendly_forms() -> None:
    s = Schedule("Daily", ["22:30", "06:00"])  # type: ignore[arg-type]
    assert s.frequency == "daily"
    assert s.times == (time(22, 30), time(6, 0))
    s.validate()
    assert hash(s) == hash(Schedule("daily", (time(22, 30), time(6, 0))))


# ------------------------------------------------------------------ from_dict / to_dict


def test_round_trip_default() -> None:
    d = DEFAULT_POLICY_SCHEDULE.to_dict()
    assert d == {
        "frequency": "daily",
        "times": ["22:30"],
        "weekdays": [],
        "hourly_interval": None,
        "hourly_window_hours": None,
        "timezone": "UTC",
    }
    assert Schedule.from_dict(json.loads(json.dumps(d))) == DEFAULT_POLICY_SCHEDULE


@pytest.mark.parametrize("schedule", VALID, ids=lambda s: f"{s.frequency}-{s.timezone}")
def test_round_trip_valid(schedule: Schedule) -> None:
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule


def test_from_dict_accepts_minimal_and_day_names() -> None:
    s = Schedule.from_dict({"frequency": "Weekly", "times": ["01:00"], "weekdays": ["Sunday", "wed"]})
    assert s == Schedule("weekly", (time(1),), weekdays=(6, 2), timezone="UTC")


@pytest.mark.parametrize(
    "payload,code",
    [
        ([], "UserErrorSchedulePolicyInvalid"),
        ({"frequency": "daily"}, "UserErrorSchedulePolicyInvalid"),
        ({"frequency": "daily", "times": ["22:30"], "colour": "red"}, "UserErrorSchedulePolicyInvalid"),
        ({"frequency": "daily", "times": 5}, "UserErrorSchedulePolicyInvalid"),
        ({"frequency": 3, "times": ["22:30"]}, "UserErrorScheduleFrequencyInvalid"),
        ({"frequency": "daily", "times": ["half past ten"]}, "UserErrorInvalidScheduleTime"),
        ({"frequency": "daily", "times": [None]}, "UserErrorInvalidScheduleTime"),
        ({"frequency": "weekly", "times": ["01:00"], "weekdays": ["Funday"]}, "UserErrorScheduleWeekdaysInvalid"),
        ({"frequency": "weekly", "times": ["01:00"], "weekdays": "Monday"}, "UserErrorScheduleWeekdaysInvalid"),
        ({"frequency": "hourly", "times": ["01:00"], "hourly_interval": "4"}, "UserErrorHourlyIntervalInvalid"),
        ({"frequency": "daily", "times": ["01:00"], "timezone": None}, "UserErrorTimeZoneInvalid"),
        ({"frequency": "daily", "times": ["01:00"], "timezone": "Nowhere/Special"}, "UserErrorTimeZoneInvalid"),
    ],
)
def test_from_dict_rejects_bad_input_with_a_user_error(payload: object, code: str) -> None:
    with pytest.raises(UserError) as info:
        Schedule.from_dict(payload)  # type: ignore[arg-type]
    assert info.value.code == code


# ------------------------------------------------------------------ slots


def test_daily_slots() -> None:
    s = Schedule("daily", (time(22, 30), time(6, 0)))
    slots = list(s.slots_between(utc(2024, 1, 1), utc(2024, 1, 4)))
    assert slots == [
        utc(2024, 1, 1, 6),
        utc(2024, 1, 1, 22, 30),
        utc(2024, 1, 2, 6),
        utc(2024, 1, 2, 22, 30),
        utc(2024, 1, 3, 6),
        utc(2024, 1, 3, 22, 30),
    ]
    assert all(x.tzinfo is UTC for x in slots)


def test_range_is_open_at_start_and_closed_at_end() -> None:
    s = DEFAULT_POLICY_SCHEDULE
    assert list(s.slots_between(utc(2024, 1, 1, 22, 30), utc(2024, 1, 2, 22, 30))) == [utc(2024, 1, 2, 22, 30)]
    assert s.next_slot(utc(2024, 1, 1, 22, 30)) == utc(2024, 1, 2, 22, 30)
    assert s.next_slot(utc(2024, 1, 1, 22, 29, 59)) == utc(2024, 1, 1, 22, 30)
    assert list(s.slots_between(utc(2024, 1, 2), utc(2024, 1, 1))) == []


def test_slots_in_another_time_zone_and_offset_inputs() -> None:
    s = Schedule("daily", (time(22, 30),), timezone="Asia/Tokyo")  # UTC+9
    after = datetime(2024, 1, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))  # 05:00 UTC
    assert s.next_slot(after) == utc(2024, 1, 1, 13, 30)


def test_weekly_slots_only_on_their_days() -> None:
    s = Schedule("weekly", (time(1, 0),), weekdays=(0, 4), timezone="Europe/Berlin")
    slots = list(s.slots_between(utc(2024, 1, 1), utc(2024, 1, 31)))
    days = [local(x, "Europe/Berlin") for x in slots]
    assert {d.weekday() for d in days} == {0, 4}
    assert all(d.time() == time(1, 0) for d in days)
    # Monday 1 January 01:00 in Berlin is 00:00 UTC: the start itself, which the range excludes
    assert [d.day for d in days] == [5, 8, 12, 15, 19, 22, 26, 29]


def test_hourly_slots_window_and_interval() -> None:
    s = Schedule("hourly", (time(8, 0),), hourly_interval=4, hourly_window_hours=12)
    slots = list(s.slots_between(utc(2024, 5, 1), utc(2024, 5, 2, 23, 59)))
    assert slots == [utc(2024, 5, 1, h) for h in (8, 12, 16)] + [utc(2024, 5, 2, h) for h in (8, 12, 16)]


def test_hourly_window_past_midnight() -> None:
    s = Schedule("hourly", (time(20, 0),), hourly_interval=6, hourly_window_hours=12)
    slots = list(s.slots_between(utc(2024, 5, 1), utc(2024, 5, 2, 12)))
    # the window of 30 April (20:00-08:00) still runs at 02:00 on 1 May
    assert slots == [utc(2024, 5, 1, 2), utc(2024, 5, 1, 20), utc(2024, 5, 2, 2)]


def test_hourly_full_day_every_four_hours() -> None:
    s = Schedule("hourly", (time(0, 30),), hourly_interval=4, hourly_window_hours=24, timezone="Asia/Kolkata")
    slots = list(s.slots_between(utc(2024, 5, 1), utc(2024, 5, 8)))
    assert len(slots) == 6 * 7
    assert {local(x, "Asia/Kolkata").time() for x in slots} == {time(h, 30) for h in (0, 4, 8, 12, 16, 20)}


# ------------------------------------------------------------------ daylight saving time


def test_berlin_spring_forward_runs_at_the_change() -> None:
    # 31 March 2024: 02:00 CET -> 03:00 CEST (01:00 UTC); 02:30 does not exist that day
    s = Schedule("daily", (time(2, 30),), timezone="Europe/Berlin")
    slots = list(s.slots_between(utc(2024, 3, 29), utc(2024, 4, 2)))
    assert slots == [utc(2024, 3, 29, 1, 30), utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30)]
    assert local(slots[2], "Europe/Berlin").time() == time(3, 0)


def test_berlin_fall_back_runs_once_at_first_occurrence() -> None:
    # 27 October 2024: 03:00 CEST -> 02:00 CET; 02:30 happens at 00:30 UTC and again at 01:30 UTC
    s = Schedule("daily", (time(2, 30),), timezone="Europe/Berlin")
    slots = list(s.slots_between(utc(2024, 10, 26), utc(2024, 10, 29)))
    assert slots == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_new_york_spring_forward_and_fall_back() -> None:
    s = Schedule("daily", (time(2, 0), time(2, 30)), timezone="America/New_York")
    spring = list(s.slots_between(utc(2024, 3, 10), utc(2024, 3, 11)))
    # 10 March 2024: 02:00 EST -> 03:00 EDT at 07:00 UTC: both times run once, together, at the change
    assert spring == [utc(2024, 3, 10, 7, 0)]
    s = Schedule("daily", (time(1, 0), time(1, 30)), timezone="America/New_York")
    fall = list(s.slots_between(utc(2024, 11, 2, 12), utc(2024, 11, 4, 12)))
    # 3 November 2024: 01:00-02:00 happens twice (EDT, then EST); the first occurrence runs
    assert fall == [utc(2024, 11, 3, 5, 0), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 0), utc(2024, 11, 4, 6, 30)]


def test_three_times_inside_the_gap_run_once() -> None:
    s = Schedule("daily", (time(2, 0), time(2, 30), time(3, 0)), timezone="Europe/Berlin")
    day = list(s.slots_between(utc(2024, 3, 30, 12), utc(2024, 3, 31, 12)))
    assert day == [utc(2024, 3, 31, 1, 0)]
    normal = list(s.slots_between(utc(2024, 3, 31, 12), utc(2024, 4, 1, 12)))
    assert len(normal) == 3


def test_hourly_across_dst_keeps_wall_clock_times() -> None:
    s = Schedule("hourly", (time(0, 0),), hourly_interval=4, hourly_window_hours=24, timezone="Europe/Berlin")
    spring = [local(x, "Europe/Berlin") for x in s.slots_between(utc(2024, 3, 30, 23), utc(2024, 3, 31, 21, 59))]
    assert [x.time() for x in spring] == [time(h) for h in (4, 8, 12, 16, 20)]
    assert spring[0].astimezone(UTC) - utc(2024, 3, 30, 23) == timedelta(hours=3)  # the short night
    fall = [local(x, "Europe/Berlin") for x in s.slots_between(utc(2024, 10, 26, 22), utc(2024, 10, 27, 22, 59))]
    assert [x.time() for x in fall] == [time(h) for h in (4, 8, 12, 16, 20)]
    assert fall[0].astimezone(UTC) - utc(2024, 10, 26, 22) == timedelta(hours=5)  # the long night


def test_weekly_on_the_dst_sunday() -> None:
    s = Schedule("weekly", (time(2, 30),), weekdays=(6,), timezone="Europe/Berlin")
    assert s.next_slot(utc(2024, 3, 25)) == utc(2024, 3, 31, 1, 0)
    assert s.next_slot(utc(2024, 10, 21)) == utc(2024, 10, 27, 0, 30)
    assert s.next_slot(utc(2024, 10, 27, 0, 30)) == utc(2024, 11, 3, 1, 30)


def test_a_skipped_calendar_day() -> None:
    # Samoa skipped 30 December 2011 (UTC-10 -> UTC+14): that day's 12:00 runs at the first instant after
    s = Schedule("daily", (time(12, 0),), timezone="Pacific/Apia")
    slots = list(s.slots_between(utc(2011, 12, 29), utc(2012, 1, 1)))
    assert [local(x, "Pacific/Apia").isoformat() for x in slots] == [
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
        "2012-01-01T12:00:00+14:00",  # 22:00 UTC on 31 December
    ]


def test_localize_lord_howe_half_hour_shift() -> None:
    tz = ZoneInfo("Australia/Lord_Howe")  # +10:30 / +11:00, changes at 02:00 local
    gap = localize(datetime(2024, 10, 6, 2, 0), tz)
    assert gap.astimezone(tz).replace(tzinfo=None) == datetime(2024, 10, 6, 2, 30)
    twice = localize(datetime(2024, 4, 7, 1, 45), tz)
    assert twice.utcoffset() == timedelta(0) and twice.astimezone(tz).utcoffset() == timedelta(hours=11)


# ------------------------------------------------------------------ properties

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",  # changed at midnight until 2019
    "Pacific/Apia",
]
half_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 30]))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    frequency = draw(st.sampled_from(["daily", "weekly", "hourly"]))
    tz = draw(st.sampled_from(ZONES))
    if frequency == "hourly":
        interval = draw(st.sampled_from([4, 6, 8, 12]))
        window = draw(st.sampled_from([w for w in range(4, 25) if w % interval == 0]))
        return Schedule("hourly", (draw(half_hours),), hourly_interval=interval, hourly_window_hours=window, timezone=tz)
    times = tuple(draw(st.lists(half_hours, min_size=1, max_size=3, unique=True)))
    weekdays = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True))) if frequency == "weekly" else ()
    return Schedule(frequency, times, weekdays=weekdays, timezone=tz)


instants = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2045, 1, 1), timezones=st.just(UTC))


def _walls(s: Schedule, day: date) -> list[datetime]:
    """The schedule's wall-clock times that belong to ``day``, written independently of the code."""
    if s.frequency == "hourly":
        first = datetime(day.year, day.month, day.day, s.times[0].hour, s.times[0].minute)
        return [first + timedelta(hours=h) for h in range(0, s.hourly_window_hours, s.hourly_interval)]  # type: ignore[arg-type]
    if s.frequency == "weekly" and day.weekday() not in s.weekdays:
        return []
    return [datetime(day.year, day.month, day.day, t.hour, t.minute) for t in s.times]


def brute_force_slots(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Walk every half hour in UTC: a wanted wall-clock time runs at the first instant the clock
    on the wall shows it or a later time (first occurrence; the end of a skipped hour)."""
    tz = ZoneInfo(s.timezone)
    wanted: set[datetime] = set()
    d = (start - timedelta(days=3)).date()
    while d <= end.date() + timedelta(days=1):
        wanted.update(_walls(s, d))
        d += timedelta(days=1)
    pending = sorted(wanted)
    out = []
    t = start.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    while t <= end:
        wall = t.astimezone(tz).replace(tzinfo=None)
        fired = False
        while pending and pending[0] <= wall:
            pending.pop(0)
            fired = True
        if fired and t > start:
            out.append(t)
        t += timedelta(minutes=30)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=schedules(), start=instants, days=st.integers(0, 20))
def test_slots_match_brute_force_and_are_strictly_increasing(s: Schedule, start: datetime, days: int) -> None:
    end = start + timedelta(days=days, hours=7)
    slots = list(s.slots_between(start, end))
    assert all(a < b for a, b in zip(slots, slots[1:]))
    assert all(start < x <= end and x.tzinfo is UTC for x in slots)
    assert slots == brute_force_slots(s, start, end)


@settings(max_examples=150, deadline=None)
@given(s=schedules(), start=instants, days=st.integers(1, 15))
def test_next_slot_is_consistent_with_slots_between(s: Schedule, start: datetime, days: int) -> None:
    horizon = start + timedelta(days=days)
    slots = list(s.slots_between(start, horizon))
    # walking next_slot from start visits exactly the same slots
    walked, t = [], start
    while (t := s.next_slot(t)) <= horizon:
        walked.append(t)
    assert walked == slots
    # next_slot is always within 8 days (weekly) and strictly after
    n = s.next_slot(start)
    assert start < n <= start + timedelta(days=8)
    if slots:
        assert n == slots[0]
    # splitting the range anywhere loses and duplicates nothing
    mid = start + (horizon - start) / 3
    assert list(s.slots_between(start, mid)) + list(s.slots_between(mid, horizon)) == slots


@settings(max_examples=100, deadline=None)
@given(s=schedules())
def test_round_trip_property(s: Schedule) -> None:
    d = s.to_dict()
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s
    assert Schedule.from_dict(d).to_dict() == d


@settings(max_examples=80, deadline=None)
@given(s=schedules(), start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
def test_each_day_runs_every_wall_time_at_most_once(s: Schedule, start: datetime) -> None:
    """Over 60 days, no instant and no wall-clock time runs twice (fall back, merged DST gaps)."""
    tz = ZoneInfo(s.timezone)
    a = start.replace(tzinfo=UTC)
    slots = list(s.slots_between(a, a + timedelta(days=60)))
    assert len(slots) == len(set(slots))
    walls = [x.astimezone(tz).replace(tzinfo=None) for x in slots]
    assert len(walls) == len(set(walls))  # no wall-clock time runs twice (fall back)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 30) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["daily", "weekly", "hourly", "22:30", "08:00", "Sunday", "UTC", "Europe/Berlin", "../x"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
schedule_bodies = st.fixed_dictionaries(
    {},
    optional={k: json_values for k in ("frequency", "times", "weekdays", "hourly_interval", "hourly_window_hours", "timezone")},
)


@settings(max_examples=300, deadline=None)
@given(
    body=schedule_bodies
    | st.fixed_dictionaries(
        {}, optional={k: json_values for k in ("daily_days", "weekly_weeks", "weekly_days", "monthly_months", "yearly_years")}
    )
    | json_values
)
def test_from_dict_never_fails_with_anything_but_a_user_error(body: object) -> None:
    """The API hands request bodies straight to from_dict: only UserErrors may come out."""
    from haven.domain.schedule import Retention

    for parse in (Schedule.from_dict, Retention.from_dict):
        try:
            parsed = parse(body)  # type: ignore[arg-type]
        except UserError:
            continue
        assert parse(parsed.to_dict()) == parsed

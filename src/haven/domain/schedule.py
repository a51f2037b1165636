"""Backup policies' pure rules: when backups run (:class:`Schedule`) and how long points stay (:class:`Retention`).

Both mirror Azure Backup's VM policy model; the rules are documented in ``docs/retention.md``.

Schedules are wall-clock times in the policy's time zone, right across daylight-saving changes:

* a time that does not exist that day (spring forward, e.g. 02:30 in Europe/Berlin on the last
  Sunday of March) runs at the first valid instant after it (03:00 local, the moment of the change);
* a time that occurs twice (fall back) runs once, at its first occurrence;
* slots that fall on the same instant (two times inside one skipped hour) run once.

Nothing here does I/O; the time zone data comes from :mod:`zoneinfo`.

Size: this module stays whole although it is longer than the ~400 lines the project aims for: it is one
set of pure rules, a policy's two halves. The retention is validated against the schedule
(:meth:`Retention.validate_against`), both parse with the same helpers and Azure's limits, and
every caller takes both (``PolicyIn``, the scheduler, retention); split, the halves would import
each other and a reader would have to hold both files to check one policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterator, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from haven.domain.errors import (
    DailyRetentionNotAllowed,
    DailyRetentionRequired,
    HourlyIntervalInvalid,
    HourlyWindowInvalid,
    InvalidScheduleTime,
    RetentionInvalid,
    RetentionNoTier,
    RetentionRangeInvalid,
    RetentionWeekdaysInvalid,
    ScheduleFrequencyInvalid,
    ScheduleInvalid,
    ScheduleTimeCountInvalid,
    ScheduleWeekdaysInvalid,
    TimeZoneInvalid,
    WeeklyRetentionDaysMismatch,
    WeeklyRetentionRequired,
)

__all__ = [
    "DAILY",
    "WEEKLY",
    "HOURLY",
    "FREQUENCIES",
    "HOURLY_INTERVALS",
    "MAX_TIMES_PER_DAY",
    "RETENTION_LIMITS",
    "WEEKDAY_NAMES",
    "Schedule",
    "Retention",
    "DEFAULT_POLICY_SCHEDULE",
    "DEFAULT_POLICY_RETENTION",
    "zone",
    "localize",
    "local_midnight",
    "parse_time",
    "parse_weekday",
]

UTC = timezone.utc

DAILY = "daily"
WEEKLY = "weekly"
HOURLY = "hourly"
FREQUENCIES = (DAILY, WEEKLY, HOURLY)
#: Hourly schedules run every 4, 6, 8 or 12 hours (Azure Backup's Enhanced policy).
HOURLY_INTERVALS = (4, 6, 8, 12)
HOURLY_WINDOW_MIN, HOURLY_WINDOW_MAX = 4, 24
#: Daily and weekly schedules run at 1 to 3 times of day.
MAX_TIMES_PER_DAY = 3

#: tier -> (field, minimum, maximum, unit) — Azure Backup's VM policy ranges.
RETENTION_LIMITS: dict[str, tuple[str, int, int, str]] = {
    "daily": ("daily_days", 7, 9999, "days"),
    "weekly": ("weekly_weeks", 1, 5163, "weeks"),
    "monthly": ("monthly_months", 1, 1188, "months"),
    "yearly": ("yearly_years", 1, 99, "years"),
}

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


# ---------------------------------------------------------------- time zone helpers


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone(name: Any) -> ZoneInfo:
    """The IANA time zone ``name``; :class:`TimeZoneInvalid` when there is none by that name."""
    if not isinstance(name, str) or not name or name != name.strip() or "\x00" in name:
        raise TimeZoneInvalid(timezone=name)
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise TimeZoneInvalid(timezone=name) from None


def _local_naive(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the naive wall-clock time ``wall`` happens in ``tz``.

    Ambiguous (fall back): the first occurrence. Nonexistent (spring forward): the first valid
    instant after it, i.e. the moment of the change.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _local_naive(first, tz) == wall:
        return first  # exists; fold=0 is the earlier of two occurrences
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((first, second))
    # smallest instant in [lo, hi] whose local time is at or after `wall` (whole seconds)
    a, b = 0, int((hi - lo).total_seconds())
    while a < b:
        mid = (a + b) // 2
        if _local_naive(lo + timedelta(seconds=mid), tz) >= wall:
            b = mid
        else:
            a = mid + 1
    return lo + timedelta(seconds=a)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` starts in ``tz`` (its first valid instant)."""
    return localize(datetime.combine(day, time(0)), tz)


def _require_aware(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


# ---------------------------------------------------------------- parsing helpers


def parse_time(value: Any) -> time:
    """``"22:30"`` / ``"22:30:00"`` / a naive :class:`datetime.time` -> time; :class:`InvalidScheduleTime` otherwise."""
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if m:
            h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
            if h < 24 and mi < 60 and s < 60:
                return time(h, mi, s)
    raise InvalidScheduleTime(time=value, reason="it is not a time of day in HH:MM form")


def parse_weekday(value: Any) -> int:
    """0..6, or an English day name ("Sunday", "sun") -> 0=Monday..6=Sunday."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        for i, name in enumerate(WEEKDAY_NAMES):
            if v and (v == name.lower() or v == name[:3].lower()):
                return i
        if v.isdigit() and 0 <= int(v) <= 6:
            return int(v)
    raise ValueError(value)


def _fmt_time(t: Any) -> Any:
    if isinstance(t, time):
        return t.strftime("%H:%M") if t.second == 0 and t.microsecond == 0 else t.isoformat()
    return t


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _check_keys(d: Any, allowed: set[str], error: type, name: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise error(reason=f"a {name} must be an object, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise error(reason=f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return d


# ---------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Schedule:
    """When backups run.

    * ``daily``: every day at each of ``times`` (1 to 3 times of day, on :00 or :30).
    * ``weekly``: on each of ``weekdays`` (0=Monday … 6=Sunday) at each of ``times``.
    * ``hourly``: every day, a window that opens at ``times[0]`` and lasts ``hourly_window_hours``;
      backups at its start and every ``hourly_interval`` hours inside it
      (``window // interval`` backups a day; a 24-hour window every 4 hours: 6 backups).

    All times are wall-clock times in ``timezone``.
    """

    frequency: str
    times: tuple[time, ...]
    weekdays: tuple[int, ...] = ()
    hourly_interval: int | None = None
    hourly_window_hours: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        # friendly coercions: lists -> tuples, "22:30" -> time(22, 30), "Daily" -> "daily"
        if isinstance(self.frequency, str):
            object.__setattr__(self, "frequency", self.frequency.strip().lower())
        times = _as_tuple(self.times)
        if isinstance(times, tuple):
            coerced = []
            for t in times:
                if isinstance(t, str):
                    try:
                        t = parse_time(t)
                    except InvalidScheduleTime:
                        pass  # reported by validate()
                coerced.append(t)
            times = tuple(coerced)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "weekdays", _as_tuple(self.weekdays))

    # ---- validation

    def validate(self) -> None:
        """Raise the first broken rule as a domain error (with its fix); return None when valid."""
        if self.frequency not in FREQUENCIES:
            raise ScheduleFrequencyInvalid(frequency=self.frequency)
        if not isinstance(self.times, tuple):
            raise ScheduleInvalid(reason="'times' must be a list of times of day")
        hourly = self.frequency == HOURLY
        allowed = "exactly 1" if hourly else f"1 to {MAX_TIMES_PER_DAY}"
        if (hourly and len(self.times) != 1) or (not hourly and not 1 <= len(self.times) <= MAX_TIMES_PER_DAY):
            raise ScheduleTimeCountInvalid(frequency=self.frequency, allowed=allowed, count=len(self.times))
        for t in self.times:
            if not isinstance(t, time):
                raise InvalidScheduleTime(time=t, reason="it is not a time of day in HH:MM form")
            if t.tzinfo is not None:
                raise InvalidScheduleTime(
                    time=_fmt_time(t), reason="it carries its own time zone; the schedule's time zone applies"
                )
            if t.minute not in (0, 30) or t.second or t.microsecond:
                raise InvalidScheduleTime(time=_fmt_time(t), reason="it is not on the hour or the half hour")
        if len(set(self.times)) != len(self.times):
            raise InvalidScheduleTime(
                time=[_fmt_time(t) for t in self.times], reason="the same time is given more than once"
            )
        self._validate_weekdays()
        self._validate_hourly()
        zone(self.timezone)

    def _validate_weekdays(self) -> None:
        wd = self.weekdays
        if not isinstance(wd, tuple):
            raise ScheduleWeekdaysInvalid(weekdays=wd, frequency=self.frequency, reason="they must be a list")
        if self.frequency != WEEKLY:
            if wd:
                raise ScheduleWeekdaysInvalid(
                    weekdays=list(wd), frequency=self.frequency, reason="only weekly schedules take days of the week"
                )
            return
        if not wd:
            raise ScheduleWeekdaysInvalid(weekdays=[], frequency=self.frequency, reason="no day is given")
        if not all(_is_int(d) and 0 <= d <= 6 for d in wd):
            raise ScheduleWeekdaysInvalid(
                weekdays=list(wd), frequency=self.frequency, reason="each day must be 0 (Monday) to 6 (Sunday)"
            )
        if len(set(wd)) != len(wd):
            raise ScheduleWeekdaysInvalid(
                weekdays=list(wd), frequency=self.frequency, reason="a day is given more than once"
            )

    def _validate_hourly(self) -> None:
        interval, window = self.hourly_interval, self.hourly_window_hours
        if self.frequency != HOURLY:
            if interval is not None:
                raise HourlyIntervalInvalid(interval=interval, frequency=self.frequency)
            if window is not None:
                raise HourlyWindowInvalid(window=window, reason=f"a {self.frequency} schedule has no window")
            return
        if not _is_int(interval) or interval not in HOURLY_INTERVALS:
            raise HourlyIntervalInvalid(interval=interval, frequency=self.frequency)
        if not _is_int(window) or not HOURLY_WINDOW_MIN <= window <= HOURLY_WINDOW_MAX:
            raise HourlyWindowInvalid(
                window=window, reason=f"it must be {HOURLY_WINDOW_MIN} to {HOURLY_WINDOW_MAX} hours"
            )
        if window % interval:
            raise HourlyWindowInvalid(window=window, reason=f"it is not a multiple of the {interval}-hour interval")

    # ---- slots

    @property
    def zoneinfo(self) -> ZoneInfo:
        return zone(self.timezone)

    def _wall_slots(self, day: date) -> list[datetime]:
        """The naive local wall-clock times of the runs that belong to ``day`` (ascending)."""
        if self.frequency == HOURLY:
            start = datetime.combine(day, self.times[0])
            assert self.hourly_interval and self.hourly_window_hours
            return [
                start + timedelta(hours=k * self.hourly_interval)
                for k in range(self.hourly_window_hours // self.hourly_interval)
            ]
        if self.frequency == WEEKLY and day.weekday() not in self.weekdays:
            return []
        return [datetime.combine(day, t) for t in sorted(self.times)]

    def _slots_after(self, after: datetime) -> Iterator[datetime]:
        """Every slot strictly after ``after``, ascending, forever."""
        self.validate()
        after = _require_aware(after, "after").astimezone(UTC)
        tz = self.zoneinfo
        # start two days early: an hourly window may run past midnight, and DST shifts are < 1 day
        day = _local_naive(after, tz).date() - timedelta(days=2)
        last: datetime | None = None
        while True:
            for wall in self._wall_slots(day):
                instant = localize(wall, tz)
                if instant <= after or (last is not None and instant <= last):
                    continue  # before the range, or the same instant as the previous slot
                last = instant
                yield instant
            day += timedelta(days=1)

    def slots_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The slots in ``(start, end]`` as aware UTC datetimes, strictly increasing."""
        end = _require_aware(end, "end").astimezone(UTC)
        for instant in self._slots_after(start):
            if instant > end:
                return
            yield instant

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (aware UTC)."""
        return next(self._slots_after(after))

    def runs_per_day(self) -> int:
        """How many backups a running day has (before DST merges)."""
        if self.frequency == HOURLY:
            return (self.hourly_window_hours or 0) // (self.hourly_interval or 1)
        return len(self.times)

    # ---- (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "frequency": self.frequency,
            "times": [_fmt_time(t) for t in self.times],
            "weekdays": list(self.weekdays),
            "hourly_interval": self.hourly_interval,
            "hourly_window_hours": self.hourly_window_hours,
            "timezone": self.timezone,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schedule":
        """Build and validate a schedule from its JSON form (``to_dict``'s output round-trips)."""
        d = _check_keys(d, {f for f in cls.__dataclass_fields__}, ScheduleInvalid, "schedule")
        if "frequency" not in d or "times" not in d:
            raise ScheduleInvalid(reason="'frequency' and 'times' are required")
        frequency = d["frequency"]
        if not isinstance(frequency, str):
            raise ScheduleFrequencyInvalid(frequency=frequency)
        raw_times = d["times"]
        if isinstance(raw_times, str):
            raw_times = [raw_times]
        if not isinstance(raw_times, (list, tuple)):
            raise ScheduleInvalid(reason="'times' must be a list of HH:MM times")
        times = tuple(parse_time(t) for t in raw_times)
        raw_days = d.get("weekdays") or ()
        if not isinstance(raw_days, (list, tuple)):
            raise ScheduleWeekdaysInvalid(weekdays=raw_days, frequency=frequency, reason="they must be a list")
        try:
            weekdays = tuple(parse_weekday(x) for x in raw_days)
        except ValueError:
            raise ScheduleWeekdaysInvalid(
                weekdays=list(raw_days), frequency=frequency, reason="each day must be 0 (Monday) to 6 (Sunday)"
            ) from None
        schedule = cls(
            frequency=frequency,
            times=times,
            weekdays=weekdays,
            hourly_interval=d.get("hourly_interval"),
            hourly_window_hours=d.get("hourly_window_hours"),
            timezone=d.get("timezone", "UTC"),
        )
        schedule.validate()
        return schedule


# ---------------------------------------------------------------- retention


@dataclass(frozen=True)
class Retention:
    """How long recovery points stay: daily, weekly, monthly and yearly tiers (grandfather-father-son).

    ``None`` leaves a tier unused. What each tier keeps is :func:`haven.domain.retention.select`'s
    rule, written down in ``docs/retention.md``.
    """

    daily_days: int | None = 30
    weekly_weeks: int | None = None
    weekly_days: tuple[int, ...] = field(default=(6,))
    monthly_months: int | None = None
    yearly_years: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weekly_days", _as_tuple(self.weekly_days))

    def tiers(self) -> dict[str, int]:
        """The tiers in use: ``{"daily": 30, "monthly": 12, …}``."""
        out = {}
        for tier, (attr, *_rest) in RETENTION_LIMITS.items():
            value = getattr(self, attr)
            if value is not None:
                out[tier] = value
        return out

    def validate(self) -> None:
        for tier, (attr, lo, hi, unit) in RETENTION_LIMITS.items():
            value = getattr(self, attr)
            if value is None:
                continue
            if not _is_int(value) or not lo <= value <= hi:
                raise RetentionRangeInvalid(tier=tier, value=value, minimum=lo, maximum=hi, unit=unit)
        if not self.tiers():
            raise RetentionNoTier()
        wd = self.weekly_days
        if not isinstance(wd, tuple) or not wd:
            raise RetentionWeekdaysInvalid(weekdays=wd, reason="no day is given")
        if not all(_is_int(x) and 0 <= x <= 6 for x in wd):
            raise RetentionWeekdaysInvalid(weekdays=list(wd), reason="each day must be 0 (Monday) to 6 (Sunday)")
        if len(set(wd)) != len(wd):
            raise RetentionWeekdaysInvalid(weekdays=list(wd), reason="a day is given more than once")

    def validate_against(self, schedule: Schedule) -> None:
        """The retention's rules that depend on the schedule (Azure Backup's, see docs/retention.md).

        * daily and hourly schedules need a daily tier (their daily points must be kept);
        * a weekly schedule takes no daily tier, needs a weekly tier, and its weekly retention days
          must be days on which it runs.
        """
        schedule.validate()
        self.validate()
        if schedule.frequency in (DAILY, HOURLY):
            if self.daily_days is None:
                raise DailyRetentionRequired(frequency=schedule.frequency)
            return
        if self.daily_days is not None:
            raise DailyRetentionNotAllowed()
        if self.weekly_weeks is None:
            raise WeeklyRetentionRequired()
        if not set(self.weekly_days) <= set(schedule.weekdays):
            raise WeeklyRetentionDaysMismatch(
                weekdays=sorted(self.weekly_days), schedule_days=sorted(schedule.weekdays)
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "daily_days": self.daily_days,
            "weekly_weeks": self.weekly_weeks,
            "weekly_days": list(self.weekly_days),
            "monthly_months": self.monthly_months,
            "yearly_years": self.yearly_years,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Retention":
        """Build and validate a retention from its JSON form; a missing tier is unset (null)."""
        d = _check_keys(d, {f for f in cls.__dataclass_fields__}, RetentionInvalid, "retention")
        raw_days = d.get("weekly_days", (6,))
        if raw_days is None:
            raw_days = (6,)
        if not isinstance(raw_days, (list, tuple)):
            raise RetentionWeekdaysInvalid(weekdays=raw_days, reason="they must be a list")
        try:
            weekly_days = tuple(parse_weekday(x) for x in raw_days)
        except ValueError:
            raise RetentionWeekdaysInvalid(
                weekdays=list(raw_days), reason="each day must be 0 (Monday) to 6 (Sunday)"
            ) from None
        retention = cls(
            daily_days=d.get("daily_days"),
            weekly_weeks=d.get("weekly_weeks"),
            weekly_days=weekly_days,
            monthly_months=d.get("monthly_months"),
            yearly_years=d.get("yearly_years"),
        )
        retention.validate()
        return retention


#: Every new vault's ``DefaultPolicy``: daily at 22:30 UTC, daily points kept 30 days.
DEFAULT_POLICY_SCHEDULE = Schedule(DAILY, (time(22, 30),), timezone="UTC")
DEFAULT_POLICY_RETENTION = Retention(daily_days=30)

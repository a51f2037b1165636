"""Errors of the policy rules: schedules (when backups run) and retention (how long points stay).

Every class is a :class:`haven.errors.UserError` (HTTP 400, exit code 2): the request was
invalid and nothing was changed. Each names a stable ``code`` in the seeds' style, a
``message`` and a ``recommendation`` (the fix), both ``str.format`` templates filled from the
keyword arguments given when raising.
"""

from __future__ import annotations

from haven.errors import UserError

__all__ = [
    "ScheduleInvalid",
    "ScheduleFrequencyInvalid",
    "InvalidScheduleTime",
    "ScheduleTimeCountInvalid",
    "ScheduleWeekdaysInvalid",
    "HourlyIntervalInvalid",
    "HourlyWindowInvalid",
    "TimeZoneInvalid",
    "RetentionInvalid",
    "RetentionRangeInvalid",
    "RetentionNoTier",
    "RetentionWeekdaysInvalid",
    "DailyRetentionRequired",
    "DailyRetentionNotAllowed",
    "WeeklyRetentionRequired",
    "WeeklyRetentionDaysMismatch",
]


# ---- schedule ----


class ScheduleInvalid(UserError):
    code = "UserErrorSchedulePolicyInvalid"
    message = "The backup schedule is invalid: {reason}."
    recommendation = (
        "Give the schedule as an object such as "
        '{{"frequency": "daily", "times": ["22:30"], "timezone": "UTC"}}.'
    )


class ScheduleFrequencyInvalid(UserError):
    code = "UserErrorScheduleFrequencyInvalid"
    message = "The schedule frequency {frequency!r} is not supported."
    recommendation = "Use 'daily', 'weekly' (with the days of the week) or 'hourly' (with an interval and a window)."


class InvalidScheduleTime(UserError):
    code = "UserErrorInvalidScheduleTime"
    message = "The schedule time {time!r} is invalid: {reason}."
    recommendation = (
        "Give times of day as HH:MM on the hour or the half hour (for example 22:00 or 22:30), "
        "each at most once."
    )


class ScheduleTimeCountInvalid(UserError):
    code = "UserErrorScheduleTimeCountInvalid"
    message = "A {frequency} schedule takes {allowed} time(s) of day; {count} were given."
    recommendation = (
        "Give 1 to 3 run times for a daily or weekly schedule, and exactly one window start time "
        "for an hourly schedule."
    )


class ScheduleWeekdaysInvalid(UserError):
    code = "UserErrorScheduleWeekdaysInvalid"
    message = "The days of the week {weekdays!r} are invalid for a {frequency} schedule: {reason}."
    recommendation = (
        "A weekly schedule needs one or more distinct days (0=Monday … 6=Sunday); daily and hourly "
        "schedules run every day and take no days."
    )


class HourlyIntervalInvalid(UserError):
    code = "UserErrorHourlyIntervalInvalid"
    message = "The hourly interval {interval!r} is invalid for a {frequency} schedule."
    recommendation = "An hourly schedule runs every 4, 6, 8 or 12 hours; daily and weekly schedules take no interval."


class HourlyWindowInvalid(UserError):
    code = "UserErrorHourlyWindowInvalid"
    message = "The backup window of {window!r} hours is invalid: {reason}."
    recommendation = (
        "Give a window of 4 to 24 hours that is a multiple of the interval (for example a 12-hour "
        "window every 4 hours); daily and weekly schedules take no window."
    )


class TimeZoneInvalid(UserError):
    code = "UserErrorTimeZoneInvalid"
    message = "The time zone {timezone!r} is not a known IANA time zone."
    recommendation = "Use an IANA time zone name such as 'UTC', 'Europe/Berlin' or 'America/New_York'."


# ---- retention ----


class RetentionInvalid(UserError):
    code = "UserErrorRetentionPolicyInvalid"
    message = "The retention policy is invalid: {reason}."
    recommendation = (
        'Give the retention as an object such as {{"daily_days": 30, "weekly_weeks": 12, '
        '"weekly_days": [6], "monthly_months": 60, "yearly_years": 10}} (null for an unused tier).'
    )


class RetentionRangeInvalid(UserError):
    code = "UserErrorRetentionRangeInvalid"
    message = "The {tier} retention of {value!r} {unit} is out of range: it must be {minimum} to {maximum} {unit}."
    recommendation = "Choose a {tier} retention between {minimum} and {maximum} {unit}, or leave the tier unset."


class RetentionNoTier(UserError):
    code = "UserErrorRetentionNoTier"
    message = "The retention policy keeps nothing: no daily, weekly, monthly or yearly retention is set."
    recommendation = "Set at least one retention tier, for example daily points kept for 30 days."


class RetentionWeekdaysInvalid(UserError):
    code = "UserErrorRetentionWeekdaysInvalid"
    message = "The weekly retention days {weekdays!r} are invalid: {reason}."
    recommendation = "Give one or more distinct days of the week (0=Monday … 6=Sunday) whose backups are the weekly points."


class DailyRetentionRequired(UserError):
    code = "UserErrorDailyRetentionRequired"
    message = "A {frequency} backup schedule needs a daily retention: its daily backup points would not be kept."
    recommendation = "Set the daily retention (7 to 9999 days)."


class DailyRetentionNotAllowed(UserError):
    code = "UserErrorDailyRetentionNotAllowed"
    message = "A weekly backup schedule cannot have a daily retention: it takes no daily backups."
    recommendation = "Remove the daily retention and keep the weekly points with a weekly retention instead."


class WeeklyRetentionRequired(UserError):
    code = "UserErrorWeeklyRetentionRequired"
    message = "A weekly backup schedule needs a weekly retention: its weekly backup points would not be kept."
    recommendation = "Set the weekly retention (1 to 5163 weeks) on the schedule's days."


class WeeklyRetentionDaysMismatch(UserError):
    code = "UserErrorWeeklyRetentionDaysMismatch"
    message = (
        "The weekly retention keeps the backups of days {weekdays!r}, but the weekly schedule only "
        "runs on days {schedule_days!r}."
    )
    recommendation = "Choose weekly retention days among the days the schedule runs on ({schedule_days!r})."

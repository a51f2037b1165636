"""Backup policies: schedule and retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from haven.api.schemas.base import APPROVAL_FIELD, POLICY_NAME, Strict, documented_pattern

__all__ = ["ScheduleBody", "RetentionBody", "PolicyIn", "PolicyUpdate", "PolicyOut", "AssociatedItem"]


class ScheduleBody(Strict):
    frequency: Literal["daily", "weekly", "hourly"]
    times: list[str] = Field(min_length=1, max_length=3)
    weekdays: list[int] = Field(default=[], max_length=7)
    hourly_interval: int | None = None
    hourly_window_hours: int | None = None
    timezone: str = Field(default="UTC", min_length=1, max_length=64)


class RetentionBody(Strict):
    daily_days: int | None = None
    weekly_weeks: int | None = None
    weekly_days: list[int] = Field(default=[6], max_length=7)
    monthly_months: int | None = None
    yearly_years: int | None = None


class PolicyIn(Strict):
    # The key vault's routes have a PolicyIn too, so the OpenAPI document names this one by its module:
    # the module it had before the schemas were split by resource (haven__api__schemas__PolicyIn).
    __module__ = "haven.api.schemas"

    name: str = documented_pattern(POLICY_NAME, min_length=1, max_length=150)
    schedule: ScheduleBody
    retention: RetentionBody


class PolicyUpdate(Strict):
    schedule: ScheduleBody | None = None
    retention: RetentionBody | None = None
    approval_id: str | None = APPROVAL_FIELD


class PolicyOut(BaseModel):
    id: str
    name: str
    vault_id: str
    schedule: dict[str, Any]
    retention: dict[str, Any]
    next_run: datetime | None
    protected_items: int
    created_at: datetime


class AssociatedItem(BaseModel):
    item_id: str
    vm: str
    state: str

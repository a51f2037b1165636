"""Regions, subscriptions, tokens and the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from haven.api.schemas.base import SUBSCRIPTION_NAME, Strict, documented_pattern

__all__ = ["RegionOut", "IpRangesOut", "SubscriptionIn", "SubscriptionOut", "TokenIn", "TokenCreated", "TokenOut", "WhoAmI"]


class RegionOut(BaseModel):
    name: str
    paired_region: str | None


class IpRangesOut(BaseModel):
    region: str
    storage_endpoints: list[str]
    ip_ranges: list[str]



class SubscriptionIn(Strict):
    name: str = documented_pattern(SUBSCRIPTION_NAME, min_length=1, max_length=64)


class SubscriptionOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    role: Literal["Reader", "Operator", "Contributor", "Owner"]
    subscription: str | None = Field(default=None, min_length=1, max_length=64)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    principal: str | None = Field(default=None, min_length=1, max_length=128)


class TokenCreated(BaseModel):
    id: str
    name: str
    principal: str
    role: str
    scope: str
    expires_at: datetime | None
    token: str


class TokenOut(BaseModel):
    id: str
    name: str
    principal: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class WhoAmI(BaseModel):
    principal: str
    kind: str
    roles: dict[str, str]

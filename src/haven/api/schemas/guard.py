"""Resource guards (multi-user authorization): guards, vault links, requests, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from haven.api.schemas.base import APPROVAL_FIELD, Strict

__all__ = ["ResourceGuardIn", "ResourceGuardOut", "VaultGuardIn", "VaultGuardOut", "GuardDecisionIn", "GuardRequestOut", "GuardAuditOut"]


class ResourceGuardIn(Strict):
    name: str = Field(min_length=1, max_length=50)
    approval_window_minutes: int | None = Field(default=None, description="How long a request may wait for approval, and an approval stays usable (5-1440; default 240).")


class ResourceGuardOut(BaseModel):
    id: str
    name: str
    subscription_id: str
    approval_window_minutes: int
    approver_role: str
    approvers: list[str]
    protected_vaults: int
    protected_operations: list[str]
    created_at: datetime


class VaultGuardIn(Strict):
    guard: str = Field(min_length=1, max_length=64, description="The guard's name (in guard_subscription) or id.")
    guard_subscription: str | None = Field(default=None, min_length=1, max_length=64,
                                           description="The guard's subscription (default: the vault's).")
    approval_id: str | None = APPROVAL_FIELD


class VaultGuardOut(BaseModel):
    vault: str
    vault_id: str
    guarded: bool
    guard_id: str | None
    guard: str | None
    guard_subscription_id: str | None
    since: datetime | None
    protected_operations: list[str]


class GuardDecisionIn(Strict):
    comment: str | None = Field(default=None, max_length=1000)


class GuardRequestOut(BaseModel):
    id: str
    guard_id: str
    guard: str | None
    vault_id: str
    vault: str
    subscription_id: str
    operation: str
    parameters: dict[str, Any]
    parameters_digest: str
    requester: str
    status: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    used_at: datetime | None


class GuardAuditOut(BaseModel):
    id: int
    time: datetime
    event: str
    principal: str
    guard_id: str | None
    vault_id: str | None
    vault: str | None
    request_id: str | None
    operation: str | None
    code: str | None
    detail: str | None

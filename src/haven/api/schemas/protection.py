"""Protected items: enable, change policy, stop, back up now, readiness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from haven.api.schemas.base import APPROVAL_FIELD, Name, Strict
from haven.api.schemas.errors import ErrorDetail

__all__ = ["EnableProtectionIn", "SetPolicyIn", "DisableProtectionIn", "BackupNowIn", "ItemOut", "EnableResultOut", "EnableManyOut", "CheckVmOut"]


class EnableProtectionIn(Strict):
    """One VM (``vm``: the answer is its item) or several (``vms``: the answer is one result per VM)."""

    vm: str | None = Field(default=None, min_length=1, max_length=128)
    vms: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(default=None, min_length=1, max_length=1000)
    policy: str | None = Field(default=None, min_length=1, max_length=150)
    host: str | None = Field(default=None, min_length=1, max_length=128)
    include_disks: list[str] | None = Field(default=None, max_length=64)
    exclude_disks: list[str] | None = Field(default=None, max_length=64)
    approval_id: str | None = APPROVAL_FIELD

    @model_validator(mode="after")
    def _one_form(self) -> "EnableProtectionIn":
        if (self.vm is None) == (self.vms is None):
            raise ValueError("give either vm (one VM) or vms (a list of VMs), not both and not neither")
        if self.vms is not None and len(set(self.vms)) != len(self.vms):
            raise ValueError("vms must not name a VM twice")
        return self


class SetPolicyIn(Strict):
    policy: str = Name
    approval_id: str | None = APPROVAL_FIELD


class DisableProtectionIn(Strict):
    delete_backup_data: bool = False
    approval_id: str | None = APPROVAL_FIELD


class BackupNowIn(Strict):
    retain_until: AwareDatetime | None = None


class ItemOut(BaseModel):
    id: str
    vm: str
    host: str
    vault_id: str
    policy: str | None
    protection_state: str
    last_backup_status: str | None
    last_backup_time: datetime | None
    latest_recovery_point: datetime | None
    latest_consistency: str | None
    next_scheduled_backup: datetime | None
    include_disks: list[str] | None
    exclude_disks: list[str] | None
    deleted_at: datetime | None
    purge_at: datetime | None
    created_at: datetime


class EnableResultOut(BaseModel):
    vm: str
    status: Literal["Protected", "Failed"]
    item: ItemOut | None = None
    error: ErrorDetail | None = None


class EnableManyOut(BaseModel):
    protected: int
    failed: int
    results: list[EnableResultOut]


class CheckVmOut(BaseModel):
    vm: str
    protected: bool
    state: str | None = None
    vault: str | None
    vault_id: str | None = None
    other_subscription: bool = Field(default=False, description="Protected by a vault of a subscription the caller has no role on (not named).")

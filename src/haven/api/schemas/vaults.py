"""Vaults: creation, backup properties, verification, the data key, alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from haven.api.schemas.base import APPROVAL_FIELD, Strict, VAULT_NAME, documented_pattern

__all__ = ["VaultIn", "BackupPropertiesIn", "VerifyIn", "EncryptionKeyIn", "AlertSettingsIn", "AlertSettingsOut", "AlertOut", "VaultOut"]


class VaultIn(Strict):
    name: str = documented_pattern(VAULT_NAME, min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=64)
    storage_redundancy: Literal["LRS", "GRS"] | None = None


class BackupPropertiesIn(Strict):
    storage_redundancy: Literal["LRS", "GRS"] | None = None
    soft_delete_days: int | None = Field(default=None, ge=14, le=180)
    immutability: Literal["Disabled", "Enabled", "Locked"] | None = None
    approval_id: str | None = APPROVAL_FIELD


class VerifyIn(Strict):
    read_data: bool = False
    read_data_subset: str | None = Field(default=None, min_length=1, max_length=16, description="n/m (e.g. 1/30) or p% (e.g. 5%)")


class EncryptionKeyIn(Strict):
    key_vault: str | None = Field(default=None, min_length=1, max_length=24)
    key: str | None = Field(default=None, min_length=1, max_length=127)


class AlertSettingsIn(Strict):
    webhook: str | None = Field(default=None, max_length=2048)
    email: str | None = Field(default=None, max_length=320)


class AlertSettingsOut(BaseModel):
    webhook: str | None
    email: str | None


class AlertOut(BaseModel):
    id: str
    kind: str
    severity: str
    message: str
    item_id: str | None
    job_id: str | None
    created_at: datetime
    delivered: list[str]


class VaultOut(BaseModel):
    id: str
    name: str
    subscription_id: str
    region: str
    state: str
    storage_redundancy: str
    storage_redundancy_locked: bool
    soft_delete_days: int
    immutability: str
    encryption_key: str
    alert_webhook: str | None
    alert_email: str | None
    protected_items: int
    recovery_points: int
    policies: int
    stored_bytes: int
    resource_guard: str | None = None
    created_at: datetime

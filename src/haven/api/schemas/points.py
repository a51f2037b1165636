"""Recovery points and restores."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from haven.api.schemas.base import Strict

__all__ = ["PointOut", "RestoreDisksIn"]


class PointOut(BaseModel):
    id: str
    vm: str
    time: datetime
    consistency: str
    size_bytes: int
    stored_bytes: int
    disks: list[dict[str, Any]]
    expires_at: datetime | None
    retain_until: datetime | None
    state: str


class RestoreDisksIn(Strict):
    target: str = Field(min_length=1, max_length=4096)
    disks: list[str] | None = Field(default=None, max_length=64)
    format: Literal["raw", "qcow2"] = "raw"
    host: str | None = Field(default=None, min_length=1, max_length=128,
                             description="Host of the vault's region whose agent writes the disks (default: this server).")

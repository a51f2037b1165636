"""Jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


__all__ = ["JobError", "JobOut"]


class JobError(BaseModel):
    code: str
    message: str | None
    recommendation: str | None


class JobOut(BaseModel):
    id: str
    operation: str
    type: str
    status: str
    vm: str | None
    vault_id: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    subtasks: list[dict[str, Any]]
    warnings: list[str]
    error: JobError | None
    result: dict[str, Any]

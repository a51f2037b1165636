"""The error body every failed call answers with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


__all__ = ["ErrorDetail", "ErrorBody"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    recommendation: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail

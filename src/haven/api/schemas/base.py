"""What every body shares: ``Strict`` (no unknown fields, no NUL characters), the documented name patterns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Strict", "Name", "documented_pattern", "SUBSCRIPTION_NAME", "VAULT_NAME", "POLICY_NAME", "APPROVAL_FIELD"]

Name = Field(min_length=1, max_length=150)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


# Name rules are documented as patterns but checked by the services, so that a wrong name gets the
# seeds' error (code, message and fix) rather than a generic validation answer.
SUBSCRIPTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
VAULT_NAME = r"^[A-Za-z][A-Za-z0-9-]{1,49}$"
POLICY_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,149}$"


def documented_pattern(pattern: str, **kw):
    return Field(json_schema_extra={"pattern": pattern}, **kw)


APPROVAL_FIELD = Field(default=None, min_length=1, max_length=64,
                       description="On a vault under a resource guard: the id of the approved request for exactly this call.")

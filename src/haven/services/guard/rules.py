"""Multi-user authorization's rules without I/O: the protected operations, a request's states, the
approval window's bounds, and the digest that binds an approval to the exact call it was asked for."""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Any

from haven.domain.vault import retention_reduced

__all__ = ["GUARD_APPROVER_ROLE", "DEFAULT_APPROVAL_WINDOW_MINUTES", "MIN_WINDOW", "MAX_WINDOW", "GUARD_NAME", "Operation",
           "RequestStatus", "retention_shortened", "canonical", "request_digest"]

GUARD_APPROVER_ROLE = "Guard Approver"
DEFAULT_APPROVAL_WINDOW_MINUTES = 240  # like a just-in-time role activation: 4 hours
MIN_WINDOW, MAX_WINDOW = 5, 24 * 60
GUARD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,49}$")


class Operation(StrEnum):
    """The operations a resource guard protects (Azure's names where Haven has the same operation)."""

    REDUCE_SOFT_DELETE = "ReduceSoftDeletePeriod"  # Haven's soft delete cannot be switched off, only shortened
    DISABLE_IMMUTABILITY = "DisableImmutability"
    REDUCE_POLICY_RETENTION = "ModifyPolicyReducedRetention"
    MODIFY_PROTECTION_REDUCED_RETENTION = "ModifyProtectionReducedRetention"
    STOP_PROTECTION_DELETE_DATA = "StopProtectionWithDeleteData"
    REMOVE_GUARD = "RemoveResourceGuard"


class RequestStatus(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    USED = "Used"
    EXPIRED = "Expired"  # shown, never stored: a Pending or Approved request past its expiry

def retention_shortened(old: dict, new: dict) -> list[str]:
    """What ``new`` keeps for less time than ``old``: shorter or dropped tiers, and weekly days no longer kept."""
    reduced = retention_reduced(old or {}, new or {})
    if (old or {}).get("weekly_weeks") is not None and (new or {}).get("weekly_weeks") is not None:
        if set((old or {}).get("weekly_days") or [6]) - set((new or {}).get("weekly_days") or [6]):
            reduced.append("weekly_days")
    return reduced


def canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def request_digest(operation: str, vault_id: str, requester_id: str, parameters: dict) -> str:
    body = json.dumps({"operation": operation, "vault": vault_id, "requester": requester_id, "parameters": parameters},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()

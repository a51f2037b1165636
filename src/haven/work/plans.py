"""The plans a server makes for a host and the outcomes a host sends back; JSON on the agent API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

from haven.errors import UserError

__all__ = ["Wire", "BackupPlan", "BackupOutcome", "RestorePlan", "RestoreDisksOutcome", "RestoreVmPlan", "RestoreVmOutcome",
           "ReplaceDisksPlan", "ReplaceDisksOutcome", "FileRecoveryPlan"]


class Wire:
    """Plans and outcomes cross the agent API as JSON objects."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"The agent's {cls.__name__} does not match this server's: {e}.",
                            "Run the same Haven version on the server and its host agents.") from None


@dataclass
class BackupPlan(Wire):
    item_id: str
    vault_id: str
    point_id: str
    vm: str
    started: str  # ISO time the server gave the point
    meta: dict[str, Any]  # the point's metadata without what only the snapshot knows
    parent_point_id: str | None = None
    checkpoint: str | None = None
    include_disks: list[str] | None = None


@dataclass
class BackupOutcome(Wire):
    consistency: str
    disks: list[dict[str, Any]]
    bytes_read: int
    bytes_new: int
    checkpoint: str | None
    warned: bool
    extension: dict[str, Any] | None = None


@dataclass
class RestorePlan(Wire):
    """restore-disks (and, with ``region``, its cross-region form from the paired region's copy)."""

    item_id: str
    point_id: str
    target: str
    disks: list[str]
    format: str = "raw"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreDisksOutcome(Wire):
    files: list[str]


@dataclass
class RestoreVmPlan(Wire):
    item_id: str
    point_id: str
    name: str
    format: str
    target: str | None
    host: str
    meta: dict[str, Any]
    disks: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class RestoreVmOutcome(Wire):
    vm: str
    host: str
    disks: dict[str, str]
    files: list[str]
    nics: list[dict[str, Any]]
    notes: list[str]
    power_state: str
    recovery_point: str


@dataclass
class ReplaceDisksPlan(Wire):
    item_id: str
    vault_id: str
    point_id: str  # the point whose disks go back
    undo_point_id: str  # the point that keeps the disks the VM has now
    parent_point_id: str | None
    vm: str
    disks: list[str]
    started: str
    meta: dict[str, Any]  # the undo point's metadata without its disks


@dataclass
class ReplaceDisksOutcome(Wire):
    replaced: dict[str, str]
    undo_stored_bytes: int


@dataclass
class FileRecoveryPlan(Wire):
    item_id: str
    point_id: str
    disks: list[str]
    seconds: int
    sessions: str  # the folder of session records
    session_id: str
    vm: str | None = None

"""Recording recovery points: the one place a ``RecoveryPoint`` row is made (backups, the undo point
of a replace, vault import), and the withdrawal of a point's manifest that could not be recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from haven.db.models import ProtectedItem, RecoveryPoint
from haven.errors import Conflict

__all__ = ["ItemNoLongerProtected", "PointRecord", "lock_item_for_point", "record_point", "withdraw_point"]

log = logging.getLogger(__name__)


class ItemNoLongerProtected(Conflict):
    code = "UserErrorItemNoLongerProtected"
    message = "Item {vm!r} is {state} now: its protection was stopped or its data deleted while job {job_id} ran, so no recovery point was recorded."
    recommendation = "Resume protection (haven protection enable-for-vm --vm {vm}; undelete the item first if its data was deleted), then run the backup again."


@dataclass(frozen=True)
class PointRecord:
    """A recovery point as the database keeps it; ``disks`` as ``{"name", "size", "format"}``."""

    point_id: str
    item_id: str
    vault_id: str
    job_id: str | None
    time: datetime
    consistency: str
    disks: list[dict[str, Any]]
    stored_bytes: int
    expires_at: datetime | None
    retain_until: datetime | None = None
    checkpoint: str | None = None


def lock_item_for_point(s, item_id: str, job_id: str | None, vm: str, allowed: tuple[str, ...]) -> ProtectedItem:
    """The item a point is about to be recorded on, locked until the transaction ends, if its state still allows it.

    Called in the transaction that inserts the point: a stop of protection that commits first is seen here,
    one that comes later waits for this transaction (and then finds the job finished)."""
    row = s.get(ProtectedItem, item_id, with_for_update=True, populate_existing=True)
    if row is None or row.state not in allowed:
        raise ItemNoLongerProtected(vm=vm, state=row.state if row is not None else "deleted", job_id=job_id)
    return row


def record_point(s, point: PointRecord, vm: str, allowed: tuple[str, ...] | None) -> ProtectedItem | None:
    """Insert ``point`` in the caller's transaction (a job's: one that checks its lease). With
    ``allowed``, its item is locked first and must be in one of those states (``ItemNoLongerProtected``);
    None only for an item made in this same transaction (vault import). Returns the locked item."""
    row = lock_item_for_point(s, point.item_id, point.job_id, vm, allowed) if allowed is not None else None
    s.add(RecoveryPoint(
        id=point.point_id, item_id=point.item_id, vault_id=point.vault_id, job_id=point.job_id, time=point.time,
        consistency=point.consistency, size_bytes=sum(d["size"] for d in point.disks), stored_bytes=point.stored_bytes,
        disks=point.disks, expires_at=point.expires_at, retain_until=point.retain_until, checkpoint=point.checkpoint,
    ))
    return row


def withdraw_point(repo, item_id: str, point_id: str) -> None:
    """The point's manifest is written but the point could not be recorded (lease lost, item no longer
    protected): withdraw it from storage too."""
    try:
        repo.delete_point(item_id, point_id)
    except Exception:  # GC finds it later; never hide the original error
        log.exception("could not withdraw point %s that was not recorded", point_id)

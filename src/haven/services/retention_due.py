"""When retention must look at an item again: ``ProtectedItem.retention_due_at``.

Retention (``Lifecycle.apply_retention``) records each kept point's expiry; the item is next due at the
earliest of them (at most ``RECHECK`` away). Between two such times the decision can change only when
something retention reads changes, and every such change makes the item due at once (``None``), here,
whichever code path made it:

* a recovery point is added (the newest-point rule moves; a day gets a later point), or its time,
  state (Corrupt points hold no tier) or ad-hoc ``retain_until`` changes;
* the item's policy or state changes (another rule, or protection resumed);
* the policy's retention or schedule (its time zone decides the days) changes.

A point deleted by hand only ever keeps more of the others, never fewer, so it needs no look.
``RECHECK`` bounds the wait should a change come by a way these hooks do not see (a bulk UPDATE).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import event, inspect, update

from haven.db.models import Policy, ProtectedItem, RecoveryPoint

__all__ = ["RECHECK", "next_due"]

#: an item is looked at least this often, due or not
RECHECK = timedelta(days=1)


def next_due(now: datetime, expiries: list[datetime | None]) -> datetime:
    """The earliest expiry still to come of an item's kept points, at most ``RECHECK`` from ``now``."""
    return min([e for e in expiries if e is not None and e > now] + [now + RECHECK])


def _changed(target, *fields: str) -> bool:
    state = inspect(target)
    return any(state.attrs[f].history.has_changes() for f in fields)


@event.listens_for(RecoveryPoint, "after_insert")
def _point_added(mapper, connection, point: RecoveryPoint) -> None:
    connection.execute(update(ProtectedItem.__table__).where(ProtectedItem.__table__.c.id == point.item_id)
                       .values(retention_due_at=None))


@event.listens_for(RecoveryPoint, "after_update")
def _point_changed(mapper, connection, point: RecoveryPoint) -> None:
    if _changed(point, "time", "state", "retain_until"):
        _point_added(mapper, connection, point)


@event.listens_for(ProtectedItem, "before_update")
def _item_changed(mapper, connection, item: ProtectedItem) -> None:
    if _changed(item, "policy_id", "state"):
        item.retention_due_at = None


@event.listens_for(Policy, "after_update")
def _policy_changed(mapper, connection, policy: Policy) -> None:
    if _changed(policy, "retention", "schedule"):
        connection.execute(update(ProtectedItem.__table__).where(ProtectedItem.__table__.c.policy_id == policy.id)
                           .values(retention_due_at=None))

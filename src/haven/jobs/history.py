"""Job and alert history kept for a while, then pruned (``job_history_days``, ``alert_history_days``).

A job is deleted only when it is finished, ended before the cut-off, and nothing still needs it:
no recovery point names it (the job that made a point stays as long as the point) and no
file-recovery session is recorded under its id (a mount's session id is its job's id).
Rows go in small batches so a large backlog never holds a long write lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update

from haven.db.models import Alert, Job, RecoveryPoint
from haven.domain.enums import JobStatus

__all__ = ["HistoryPruned", "prune_history"]

_BATCH = 500
_FINISHED = tuple(s.value for s in JobStatus if s.finished)


@dataclass(frozen=True)
class HistoryPruned:
    jobs: int
    alerts: int


def prune_history(core, now: datetime | None = None) -> HistoryPruned:
    now = now or core.clock.now()
    settings = core.settings
    return HistoryPruned(jobs=_prune_jobs(core, now - timedelta(days=settings.job_history_days)),
                         alerts=_prune_alerts(core, now - timedelta(days=settings.alert_history_days)))


def _open_session_ids(core) -> set[str]:
    return {str(m["session_id"]) for m in core.restore._sessions() if m.get("session_id")}


def _prune_jobs(core, cutoff: datetime) -> int:
    keep = _open_session_ids(core)
    deleted = 0
    while True:
        with core.db.session() as s:
            candidates = (
                select(Job.id)
                .where(Job.status.in_(_FINISHED), Job.created_at < cutoff,
                       or_(Job.ended_at.is_(None), Job.ended_at < cutoff),
                       ~select(RecoveryPoint.id).where(RecoveryPoint.job_id == Job.id).exists())
                .order_by(Job.created_at)
            )
            if keep:
                candidates = candidates.where(Job.id.not_in(keep))
            ids = list(s.scalars(candidates.limit(_BATCH)))
            if not ids:
                return deleted
            s.execute(update(Alert).where(Alert.job_id.in_(ids)).values(job_id=None))
            # the status test again: a row is never deleted if it changed since it was read
            deleted += s.execute(delete(Job).where(Job.id.in_(ids), Job.status.in_(_FINISHED))
                                 .execution_options(synchronize_session=False)).rowcount
        if len(ids) < _BATCH:
            return deleted


def _prune_alerts(core, cutoff: datetime) -> int:
    deleted = 0
    while True:
        with core.db.session() as s:
            ids = list(s.scalars(select(Alert.id).where(Alert.created_at < cutoff).order_by(Alert.created_at).limit(_BATCH)))
            if not ids:
                return deleted
            deleted += s.execute(delete(Alert).where(Alert.id.in_(ids)).execution_options(synchronize_session=False)).rowcount
        if len(ids) < _BATCH:
            return deleted

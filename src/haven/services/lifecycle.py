"""What happens to recovery points over time: retention, soft delete and purge, garbage collection.

Order of deletion, chosen to fail safe: a point's database row goes first (so nobody can start a
restore from it), then its manifest in storage; a manifest left behind by a failed storage delete
only keeps chunks alive, it never loses data. Garbage collection runs after, in the engine, which
never removes a chunk a running backup may still reference and deletes nothing when a listing fails.
It runs on its own schedule (``jobs.scheduler``): daily, and soon after points were deleted or a
backup failed (``request_gc``), with its chunk-list cache under ``$HAVEN_HOME/cache``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update

from haven.db.models import Policy, ProtectedItem, RecoveryPoint, Vault
from haven.domain.enums import PointState, ProtectionState
from haven.domain.retention import PointRef
from haven.domain.retention import select as retention_select
from haven.domain.schedule import Retention, Schedule
from haven.engine.verify import VerifyReport
from haven.services.retention_due import next_due

__all__ = ["Lifecycle", "VerifyPlan"]


@dataclass(frozen=True)
class VerifyPlan:
    """What a Verify job checks: the vault, how deep, and the points recorded when it started (id -> item, time)."""

    vault_id: str
    read_data: bool
    subset: str | None
    points: dict[str, tuple[str, str]]

log = logging.getLogger(__name__)

#: No grace beyond the engine's writer-lock rule: a failed backup's chunks free their space at once.
GC_GRACE = timedelta(0)


class Lifecycle:
    def __init__(self, core):
        self.core = core

    # ---- retention ----
    def items_due_for_retention(self) -> list[str]:
        """Protected items with a point that may have expired, or changed since retention last looked."""
        now = self.core.clock.now()
        with self.core.db.session() as s:
            return list(s.scalars(select(ProtectedItem.id).where(
                ProtectedItem.state == ProtectionState.PROTECTED.value,
                or_(ProtectedItem.retention_due_at.is_(None), ProtectedItem.retention_due_at <= now))))

    def apply_retention(self, item_id: str) -> list[str]:
        """Expire the item's points that no tier keeps; record every kept point's expiry. Returns expired ids."""
        now = self.core.clock.now()
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, item_id)
            if item is None or item.policy_id is None or item.state != ProtectionState.PROTECTED.value:
                return []  # stopped items keep their points until deleted by a user
            policy = s.get(Policy, item.policy_id)
            retention = Retention.from_dict(policy.retention)
            tz = Schedule.from_dict(policy.schedule).timezone
            points = s.scalars(select(RecoveryPoint).where(RecoveryPoint.item_id == item_id)).all()
            # A Corrupt point never holds a tier in place of a restorable one: the restorable points are decided
            # without it; it is kept (it may heal) only as long as the rule over all points would keep it.
            corrupt = {p.id for p in points if p.state == PointState.CORRUPT.value}
            refs = [PointRef(p.id, p.time, p.retain_until) for p in points]
            decision = retention_select([r for r in refs if r.id not in corrupt], retention, now, tz)
            expiries, expire = dict(decision.expiry), list(decision.expire)
            if corrupt:
                overall = retention_select(refs, retention, now, tz)
                expiries.update({pid: e for pid, e in overall.expiry.items() if pid in corrupt})
                expire += [pid for pid in overall.expire if pid in corrupt]
            by_id = {p.id: p for p in points}
            for pid, expiry in expiries.items():
                if pid in by_id:
                    by_id[pid].expires_at = expiry
            expired = [by_id[pid] for pid in expire if pid in by_id]
            item.retention_due_at = next_due(now, list(expiries.values()))
            vault = s.get(Vault, item.vault_id)
            gone = self._delete_rows(s, expired)
        self._delete_manifests(vault, item_id, gone)
        return gone

    # ---- soft delete ----
    def purge_expired_soft_deletes(self) -> list[str]:
        """Items soft-deleted longer than their vault's soft-delete period lose their data for good."""
        now = self.core.clock.now()
        purged: list[str] = []
        with self.core.db.session() as s:
            rows = s.execute(
                select(ProtectedItem, Vault).join(Vault, ProtectedItem.vault_id == Vault.id)
                .where(ProtectedItem.state == ProtectionState.SOFT_DELETED.value)
            ).all()
            due = [(i, v) for i, v in rows if i.deleted_at + timedelta(days=v.soft_delete_days) <= now]
        for item, vault in due:
            self.purge_item(item.id)
            purged.append(item.id)
        return purged

    def purge_item(self, item_id: str) -> None:
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, item_id)
            vault = s.get(Vault, item.vault_id)
            points = s.scalars(select(RecoveryPoint).where(RecoveryPoint.item_id == item_id)).all()
            gone = self._delete_rows(s, points)
            s.delete(item)
        self._delete_manifests(vault, item_id, gone)

    # ---- garbage collection ----
    def collect_garbage(self, vault_id: str):
        """The metadata store vouches for the points that exist: GC deletes nothing unless storage lists them all.

        Points of soft-deleted items stay in the store until purged, so their chunks stay live.
        """
        with self.core.db.session() as s:
            vault = s.get(Vault, vault_id)
            expected = {(item_id, point_id) for point_id, item_id in
                        s.execute(select(RecoveryPoint.id, RecoveryPoint.item_id).where(RecoveryPoint.vault_id == vault_id))}
        started = self.core.clock.now()
        repo = self.core.storage.open(vault)
        cache = repo.gc_cache(self.core.settings.home / "cache")
        try:
            report = repo.gc(grace=GC_GRACE, expected_points=expected, cache=cache)
        finally:
            cache.close()
        with self.core.db.session() as s:
            s.execute(update(Vault).where(Vault.id == vault_id).values(gc_last_at=started))
            s.execute(update(Vault).where(Vault.id == vault_id, Vault.gc_requested_at <= started).values(gc_requested_at=None))
        return report

    def request_gc(self, vault_id: str) -> None:
        """Ask for a GC of the vault soon (points were deleted, or a backup failed and left chunks)."""
        with self.core.db.session() as s:
            s.execute(update(Vault).where(Vault.id == vault_id, Vault.gc_requested_at.is_(None))
                      .values(gc_requested_at=self.core.clock.now()))

    # ---- verify ----
    def request_verify(self, caller, subscription: str, vault_name: str, read_data: bool, subset: str | None) -> dict:
        """Enqueue a Verify job (``haven vault verify``); the subset is checked now, before anything runs."""
        from haven.domain.enums import JobType, Role
        from haven.engine.verify import parse_subset

        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.OPERATOR)
            parse_subset(subset)
            job = self.core.queue.enqueue(s, type=JobType.VERIFY.value, operation="Verify",
                                          params={"read_data": read_data, "subset": subset},
                                          subscription_id=vault.subscription_id, vault_id=vault.id)
            return self.core.jobs.view(job, s)

    # The Verify job (``services.execution.VerifyHandler``): structure, and with read_data every chunk (or a
    # subset) re-read and authenticated. Bad objects are quarantined; the next backup that meets a bad chunk
    # stores it again.
    def plan_verify(self, job) -> VerifyPlan:
        """The points this verify judges: those recorded when it starts (id -> item, time)."""
        with self.core.db.session() as s:
            points = {p.id: (p.item_id, p.time.isoformat())
                      for p in s.scalars(select(RecoveryPoint).where(RecoveryPoint.vault_id == job.vault_id))}
        return VerifyPlan(vault_id=job.vault_id, read_data=bool(job.params.get("read_data")), subset=job.params.get("subset"),
                          points=points)

    def verify_vault(self, plan: VerifyPlan, ctx) -> VerifyReport:
        with self.core.db.session() as s:
            vault = s.get(Vault, plan.vault_id)
            s.expunge(vault)
        ctx.subtask("Verify vault data", percent=0)
        report = self.core.storage.open(vault).verify(read_data=plan.read_data, subset=plan.subset,
                                                      progress=ctx.progress_for("Verify vault data"))
        ctx.subtask("Verify vault data", "Completed", 100)
        if not report.ok:
            ctx.warn(f"Verify found {len(report.missing)} missing and {len(report.corrupt)} corrupt object(s); "
                     f"{len(report.affected)} recovery point(s) affected and marked Corrupt; bad objects were quarantined "
                     "and the next backup that meets them stores them again.")
        return report

    def record_verify(self, commit, plan: VerifyPlan, report: VerifyReport) -> None:
        """The report as the job's result; in the same transaction, damaged points become Corrupt and whole ones heal."""
        result = report.as_dict()
        result["affected"] = [{"item_id": i, "point_id": p, "time": plan.points.get(p, (None, None))[1]} for i, p in report.affected]
        result["chunk_points"] = {c: [list(x) for x in pts] for c, pts in report.chunk_points.items()}
        damaged = {point for _, point in report.affected}

        def record(s) -> dict:
            result["points_marked_corrupt"], result["points_healed"] = self._mark_points(s, set(plan.points), damaged)
            return result

        commit(record)

    @staticmethod
    def _mark_points(s, checked: set[str], damaged: set[str]) -> tuple[list[str], list[str]]:
        """Points this verify found damaged become Corrupt; Corrupt points it found whole are Available again.

        Every verify checks every point's structure, and a chunk found bad is quarantined (so missing from
        then on): a point that is not affected has all its chunks, none of them known bad."""
        marked, healed = [], []
        for row in s.scalars(select(RecoveryPoint).where(RecoveryPoint.id.in_(checked))):
            if row.id in damaged and row.state == PointState.AVAILABLE.value:
                row.state = PointState.CORRUPT.value
                marked.append(row.id)
            elif row.id not in damaged and row.state == PointState.CORRUPT.value:
                row.state = PointState.AVAILABLE.value
                healed.append(row.id)
        return sorted(marked), sorted(healed)

    # ---- helpers ----
    @staticmethod
    def _delete_rows(s, points: list[RecoveryPoint]) -> list[str]:
        ids = [p.id for p in points]
        for p in points:
            s.delete(p)
        return ids

    def _delete_manifests(self, vault: Vault, item_id: str, point_ids: list[str]) -> None:
        if not point_ids:
            return
        self.request_gc(vault.id)
        repo = self.core.storage.open(vault)
        for pid in point_ids:
            try:
                repo.delete_point(item_id, pid)
            except Exception:  # the row is gone; a leftover manifest only keeps chunks alive
                log.exception("could not delete manifest of point %s (item %s)", pid, item_id)

"""The hot queries use indexes (issue 23): points by item and time, jobs by vault, status and time."""

from __future__ import annotations

from sqlalchemy import func, select, text

from haven.db.models import Job, RecoveryPoint
from haven.db.session import Database
from haven.domain.enums import JobStatus


def _plan(db: Database, stmt) -> str:
    with db.engine.connect() as conn:
        compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
        return " | ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))


def test_hot_queries_use_indexes(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'haven.db'}")  # migrated like a server's
    # a VM's points, its newest point (the parent of the next backup), retention's scan
    plan = _plan(db, select(RecoveryPoint).where(RecoveryPoint.item_id == "i").order_by(RecoveryPoint.time.desc()).limit(1))
    assert "ix_recovery_points_item_time" in plan and "TEMP B-TREE" not in plan, plan
    # GC's expected points of a vault
    assert "ix_recovery_points_vault" in _plan(db, select(RecoveryPoint.id).where(RecoveryPoint.vault_id == "v"))
    # the jobs list of a vault, newest first, with and without a status filter
    plan = _plan(db, select(Job).where(Job.vault_id == "v").order_by(Job.created_at.desc()).limit(1000))
    assert "ix_jobs_vault" in plan and "TEMP B-TREE" not in plan, plan
    plan = _plan(db, select(Job).where(Job.vault_id == "v", Job.status == "Failed").order_by(Job.created_at.desc()).limit(50))
    assert "ix_jobs_vault_status_created" in plan and "TEMP B-TREE" not in plan, plan
    # the claim's concurrency limits and "is a backup of this item running"
    active = (JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value)
    for column, index in ((Job.host_id, "ix_jobs_host_status"), (Job.vault_id, "ix_jobs_vault_status_created")):
        plan = _plan(db, select(func.count()).select_from(Job).where(Job.type == "Backup", Job.status.in_(active), column == "x"))
        assert index in plan, plan
    assert "ix_jobs_item_status" in _plan(db, select(Job.id).where(Job.item_id == "i", Job.type == "Backup", Job.status.in_(active)))
    db.engine.dispose()

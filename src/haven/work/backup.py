"""The host's part of a backup: snapshot the VM, send its disks to the vault, release the snapshot."""

from __future__ import annotations

from haven.domain.enums import Consistency
from haven.work.plans import BackupOutcome, BackupPlan
from haven.work.protocols import Adapter, JobWork, Repository

__all__ = ["SNAPSHOT", "TRANSFER", "TRACKING_LOST", "run_backup", "consistency_label"]

SNAPSHOT = "Take snapshot"
TRANSFER = "Transfer data to vault"
TRACKING_LOST = ("Changed-block tracking was lost since the last backup (VM restarted or bitmap missing): "
                 "this backup read every allocated block, compared it with the last recovery point and stored only what changed. "
                 "Tracking restarts now.")


def run_backup(plan: BackupPlan, adapter: Adapter, repo: Repository, ctx: JobWork) -> BackupOutcome:
    """Snapshot the VM, send its disks to the vault, release the snapshot; the point is not recorded here."""
    ctx.subtask(SNAPSHOT, percent=0)
    with adapter.snapshot(plan.vm, previous_checkpoint=plan.checkpoint, include_disks=plan.include_disks) as snap:
        for warning in snap.warnings:
            ctx.warn(warning)
        if snap.tracking_lost:
            ctx.warn(TRACKING_LOST)
        consistency = snap.consistency if snap.consistency in ("application", "filesystem") else "crash"
        ctx.subtask(SNAPSHOT, "Completed", 100, consistency=consistency_label(consistency))
        ctx.check_cancelled()
        ctx.subtask(TRANSFER, percent=0)
        disks = [{"name": d.name, "size": d.size, "format": d.format} for d in snap.disks]
        meta = {**plan.meta, "consistency": consistency_label(consistency), "disks": disks}
        summary = repo.backup(plan.item_id, plan.point_id, list(snap.disks), meta, parent_point_id=plan.parent_point_id,
                              progress=ctx.progress_for(TRANSFER), cancel=ctx.cancel)
        extension = getattr(snap, "extension", None)
        outcome = BackupOutcome(
            consistency=consistency, disks=disks, bytes_read=summary.bytes_read, bytes_new=summary.bytes_new,
            checkpoint=snap.checkpoint, warned=bool(snap.warnings or snap.tracking_lost),
            extension=extension.to_dict() if hasattr(extension, "to_dict") else extension,
        )
    ctx.subtask(TRANSFER, "Completed", 100, bytes_read=outcome.bytes_read, bytes_stored=outcome.bytes_new)
    return outcome


def consistency_label(level: str) -> str:
    return {"application": Consistency.APPLICATION, "filesystem": Consistency.FILE_SYSTEM}.get(level, Consistency.CRASH).value

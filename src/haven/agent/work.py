"""What a host agent does with a job the server planned: back up a VM, or restore disks to a folder.

The server plans a job (what to read, where to write, which parent, which point id), the agent on
the VM's host carries it out, and the server records the outcome. ``haven serve`` runs all three
steps in one process; a remote ``haven agent`` gets the plan over the agent API and sends the
outcome back. Either way the same two functions below do the host's part, so the in-process and
the remote path cannot drift apart.

``ctx`` is anything with the ``JobContext`` surface the work needs: ``subtask``, ``progress_for``,
``warn``, ``check_cancelled`` and a ``cancel`` event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BackupPlan", "BackupOutcome", "RestorePlan", "SNAPSHOT", "TRANSFER", "consistency_label", "run_backup", "run_restore_disks"]

SNAPSHOT = "Take snapshot"
TRANSFER = "Transfer data to vault"
TRACKING_LOST = ("Changed-block tracking was lost since the last backup (VM restarted or bitmap missing): "
                 "this backup read every allocated block, compared it with the last recovery point and stored only what changed. "
                 "Tracking restarts now.")


class _Wire:
    """Plans and outcomes cross the agent API as JSON objects."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        try:
            return cls(**d)
        except TypeError as e:
            from haven.errors import UserError

            raise UserError(f"The agent's {cls.__name__} does not match this server's: {e}.",
                            "Run the same Haven version on the server and its host agents.") from None


@dataclass
class BackupPlan(_Wire):
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
class BackupOutcome(_Wire):
    consistency: str
    disks: list[dict]
    bytes_read: int
    bytes_new: int
    checkpoint: str | None
    warned: bool
    extension: dict | None = None


@dataclass
class RestorePlan(_Wire):
    item_id: str
    point_id: str
    target: str
    disks: list[str]
    format: str = "raw"
    meta: dict[str, Any] = field(default_factory=dict)


def run_backup(plan: BackupPlan, adapter, repo, ctx) -> BackupOutcome:
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
    from haven.domain.enums import Consistency

    return {"application": Consistency.APPLICATION, "filesystem": Consistency.FILE_SYSTEM}.get(level, Consistency.CRASH).value


def run_restore_disks(plan: RestorePlan, repo, ctx) -> list[str]:
    """Write the point's disks into ``plan.target`` under temporary names, then rename; never overwrite.

    Returns the files written (disks, then the VM definition). On any failure nothing is left behind.
    """
    from haven.services.restore import write_vm_definition

    target = Path(plan.target)
    target.mkdir(parents=True, exist_ok=True)
    for name in plan.disks:
        if (target / f"{name}.{plan.format}").exists():
            from haven.services.points import RestoreTargetInvalid

            raise RestoreTargetInvalid(target=plan.target, reason=f"{target / f'{name}.{plan.format}'} already exists; a restore never overwrites files.")
    written: list[Path] = []
    try:
        for name in plan.disks:
            ctx.check_cancelled()
            partial = target / f".{name}.{plan.format}.partial"
            step = f"Restore disk {name}"
            ctx.subtask(step, percent=0)
            written.append(partial)
            repo.restore_disk(plan.item_id, plan.point_id, name, str(partial), fmt=plan.format, progress=ctx.progress_for(step))
            ctx.subtask(step, "Completed", 100)
        files = []
        for i, partial in enumerate(written):
            final = target / partial.name[1:].removesuffix(".partial")
            partial.rename(final)
            written[i] = final
            files.append(str(final))
        disk_files = {Path(f).name.removesuffix(f".{plan.format}"): f for f in files}
        return files + write_vm_definition(target, plan.meta, disk_files, plan.point_id)  # libvirt XML + JSON template
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise

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

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BackupPlan", "BackupOutcome", "RestorePlan", "SNAPSHOT", "TRANSFER", "consistency_label", "RestoreVmPlan", "restore_disks_into", "run_backup", "run_restore_disks", "run_restore_vm"]

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


@dataclass
class RestoreVmPlan(_Wire):
    item_id: str
    point_id: str
    name: str
    format: str
    target: str | None
    host: str
    meta: dict[str, Any]
    disks: list[str]
    notes: list[str] = field(default_factory=list)


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
    """Write the point's disks into ``plan.target``, then its VM definition; never overwrite a file.

    Returns the files written (disks, then the VM definition). On any failure no disk is left behind.
    """
    from haven.services.points import refuse_existing
    from haven.services.restore import write_vm_definition

    target = Path(plan.target)
    refuse_existing(target, plan.disks, plan.format, plan.target)
    disks = restore_disks_into(repo, plan.item_id, plan.point_id, plan.disks, target, plan.format, ctx)
    try:
        return list(disks.values()) + write_vm_definition(target, plan.meta, disks, plan.point_id)  # libvirt XML + JSON template
    except BaseException:
        for f in disks.values():
            Path(f).unlink(missing_ok=True)
        raise


def restore_disks_into(repo, item_id: str, point_id: str, names: list[str], target: Path, fmt: str, ctx) -> dict[str, str]:
    """Restore ``names`` under temporary names in ``target``, then give them their names; returns name -> path.

    A subtask per disk ("Restore disk NAME"); a failure or a stop leaves none of them behind, and a
    file (or symlink) that appeared under a disk's name meanwhile is never replaced.
    """
    target.mkdir(parents=True, exist_ok=True)
    done: list[tuple[Path, Path]] = []
    published: list[Path] = []
    try:
        for name in names:
            ctx.check_cancelled()
            final = target / f"{name}.{fmt}"
            partial = final.with_name(f".{final.name}.partial")
            step = f"Restore disk {name}"
            ctx.subtask(step, percent=0)
            repo.restore_disk(item_id, point_id, name, str(partial), fmt=fmt, progress=ctx.progress_for(step))
            done.append((partial, final))
            ctx.subtask(step, "Completed", 100)
        for partial, final in done:
            _publish_new(partial, final, str(target))
            published.append(final)
        return {name: str(final) for (_, final), name in zip(done, names)}
    except BaseException:
        for path in [partial for partial, _ in done] + published:
            path.unlink(missing_ok=True)
        raise


def _publish_new(partial: Path, final: Path, shown: str) -> None:
    """Rename ``partial`` to ``final`` unless ``final`` exists (a hard link fails on an existing name,
    where a rename would replace it). Filesystems without hard links get a check, then a rename."""
    from haven.services.points import would_overwrite

    try:
        os.link(partial, final, follow_symlinks=False)
    except FileExistsError:
        raise would_overwrite(final, shown) from None
    except OSError:  # no hard links here (EPERM, ENOTSUP, EXDEV)
        if os.path.lexists(final):
            raise would_overwrite(final, shown) from None
        os.replace(partial, final)
        return
    partial.unlink()


def run_restore_vm(plan: RestoreVmPlan, adapter, repo, ctx, staging_root: Path) -> dict:
    """Restore the point's disks and define a new VM from them on this host; never replace a VM.

    Image-folder VMs get their disks in the new VM's folder; otherwise the disks go to ``plan.target``
    (or ``staging_root/NAME``). On failure, the disks and the staging folder are removed.
    """
    import shutil

    from haven.hypervisor.errors import VmAlreadyExists, VmNotFound
    from haven.services.points import refuse_existing
    from haven.services.restore import RestoreVmNameInUse, settle_folder_vm, write_vm_definition

    try:
        adapter.describe(plan.name)
        raise RestoreVmNameInUse(name=plan.name, host=plan.host)
    except VmNotFound:
        pass
    folder_vm = getattr(adapter, "kind", "") == "folder" and not plan.target
    if plan.target:
        staging = Path(plan.target)
    elif folder_vm:
        staging = Path(adapter.root) / f".{plan.name}.restoring-{plan.point_id[:8]}"
    else:
        staging = staging_root / plan.name
    refuse_existing(staging, plan.disks, plan.format)
    for note in plan.notes:
        ctx.warn(note)
    created_staging = not staging.exists()
    files: dict[str, str] = {}
    try:
        files = restore_disks_into(repo, plan.item_id, plan.point_id, plan.disks, staging, plan.format, ctx)
        ctx.subtask("Create VM", percent=0)
        try:
            info = adapter.define_vm(plan.name, files, plan.meta.get("definition"))
        except VmAlreadyExists:
            raise RestoreVmNameInUse(name=plan.name, host=plan.host) from None
        if folder_vm:
            files = settle_folder_vm(Path(adapter.root) / plan.name, files)
            shutil.rmtree(staging, ignore_errors=True)
            out_dir = Path(adapter.root) / plan.name
        else:
            out_dir = staging
        extra = write_vm_definition(out_dir, plan.meta, files, plan.point_id, plan.name)
        ctx.subtask("Create VM", "Completed", 100)
    except BaseException:
        for f in files.values():
            Path(f).unlink(missing_ok=True)
        if created_staging or folder_vm:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"vm": plan.name, "host": plan.host, "disks": files, "files": list(files.values()) + extra,
            "nics": plan.meta.get("nics") or [], "notes": plan.notes, "power_state": info.power_state,
            "recovery_point": plan.point_id}

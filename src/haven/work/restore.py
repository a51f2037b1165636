"""The host's part of the restores: disks into a folder, a new VM, disks put back into a VM.

Every restore writes each disk under a temporary name and gives the disks their names only when all
of them are complete; a failure or a stop leaves none behind, and no restore overwrites a file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haven.hypervisor.definitions import domain_xml_for_point, write_vm_definition
from haven.hypervisor.errors import VmAlreadyExists, VmNotFound
from haven.work.errors import (
    ReplaceDisksMismatch,
    ReplaceDisksVmRunning,
    RestoreVmNameInUse,
    refuse_existing,
    would_overwrite,
)
from haven.work.plans import (
    ReplaceDisksOutcome,
    ReplaceDisksPlan,
    RestoreDisksOutcome,
    RestorePlan,
    RestoreVmOutcome,
    RestoreVmPlan,
)
from haven.work.protocols import Adapter, JobWork, Repository

__all__ = ["restore_disks_into", "run_restore_disks", "run_cross_region_restore", "run_restore_vm", "run_replace_disks",
           "BACKUP_CURRENT", "REPLACE"]

BACKUP_CURRENT = "Back up current disks"
REPLACE = "Replace disks"


def run_restore_disks(plan: RestorePlan, repo: Repository, ctx: JobWork) -> RestoreDisksOutcome:
    """Write the point's disks into ``plan.target``, then its VM definition; never overwrite a file.

    The files written: disks, then the VM definition. On any failure no disk is left behind.
    """
    target = Path(plan.target)
    refuse_existing(target, plan.disks, plan.format, plan.target)
    return RestoreDisksOutcome(files=_disks_and_definition(plan, repo, ctx))


def run_cross_region_restore(plan: RestorePlan, repo: Repository, ctx: JobWork) -> RestoreDisksOutcome:
    """restore-disks from the paired region's copy (``repo``); the target was checked when the job was asked for."""
    return RestoreDisksOutcome(files=_disks_and_definition(plan, repo, ctx))


def _disks_and_definition(plan: RestorePlan, repo: Repository, ctx: JobWork) -> list[str]:
    target = Path(plan.target)
    disks = restore_disks_into(repo, plan.item_id, plan.point_id, plan.disks, target, plan.format, ctx)
    try:
        return list(disks.values()) + write_vm_definition(target, plan.meta, disks, plan.point_id)  # libvirt XML + JSON template
    except BaseException:
        for f in disks.values():
            Path(f).unlink(missing_ok=True)
        raise


def restore_disks_into(repo: Repository, item_id: str, point_id: str, names: list[str], target: Path, fmt: str,
                       ctx: JobWork, step: str = "Restore disk {name}") -> dict[str, str]:
    """Restore ``names`` under temporary names in ``target``, then give them their names; returns name -> path.

    A subtask per disk (``step``, "Restore disk NAME" by default); a failure or a stop leaves none of them behind, and a
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
            shown = step.format(name=name)
            ctx.subtask(shown, percent=0)
            repo.restore_disk(item_id, point_id, name, str(partial), fmt=fmt, progress=ctx.progress_for(shown))
            done.append((partial, final))
            ctx.subtask(shown, "Completed", 100)
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


def run_restore_vm(plan: RestoreVmPlan, adapter: Adapter, repo: Repository, ctx: JobWork, staging_root: Path) -> RestoreVmOutcome:
    """Restore the point's disks and define a new VM from them on this host; never replace a VM.

    The disks go to ``plan.target``, or where the adapter keeps a new VM's disks (``new_vm_staging``,
    then ``adopt_new_vm_disks``), or ``staging_root/NAME``. The VM's definition is clean of the
    original's runtime state (``hypervisor.definitions``). On failure, the disks and the staging
    folder are removed.
    """
    try:
        adapter.describe(plan.name)
        raise RestoreVmNameInUse(name=plan.name, host=plan.host)
    except VmNotFound:
        pass
    own_staging = None if plan.target else adapter.new_vm_staging(plan.name, plan.point_id[:8])
    staging = Path(plan.target) if plan.target else own_staging or staging_root / plan.name
    refuse_existing(staging, plan.disks, plan.format)
    for note in plan.notes:
        ctx.warn(note)
    created_staging = not staging.exists()
    files: dict[str, str] = {}
    try:
        files = restore_disks_into(repo, plan.item_id, plan.point_id, plan.disks, staging, plan.format, ctx)
        ctx.subtask("Create VM", percent=0)
        definition = plan.meta.get("definition")
        domain_xml = None
        if own_staging is None and isinstance(definition, str):  # the definition as the new VM's, in its own files
            domain_xml = domain_xml_for_point(plan.name, plan.meta, files, plan.point_id, files_dir=staging)
            definition = domain_xml
        try:
            info = adapter.define_vm(plan.name, files, definition)
        except VmAlreadyExists:
            raise RestoreVmNameInUse(name=plan.name, host=plan.host) from None
        out_dir = staging
        adopted = adapter.adopt_new_vm_disks(plan.name, files) if own_staging is not None else None
        if adopted is not None:
            files, out_dir = adopted
            shutil.rmtree(staging, ignore_errors=True)
        extra = write_vm_definition(out_dir, plan.meta, files, plan.point_id, plan.name, domain_xml=domain_xml)
        ctx.subtask("Create VM", "Completed", 100)
    except BaseException:
        for f in files.values():
            Path(f).unlink(missing_ok=True)
        if created_staging or own_staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreVmOutcome(vm=plan.name, host=plan.host, disks=files, files=list(files.values()) + extra,
                            nics=plan.meta.get("nics") or [], notes=plan.notes, power_state=info.power_state,
                            recovery_point=plan.point_id)


def run_replace_disks(plan: ReplaceDisksPlan, adapter: Adapter, repo: Repository, ctx: JobWork,
                      keep_undo: Callable[[list[dict[str, Any]], int], None]) -> ReplaceDisksOutcome:
    """Put a point's disks back into a stopped VM, after keeping what it has now as a recovery point.

    ``keep_undo(disks, stored_bytes)`` records the undo point (the server does, under the job's
    lease); nothing is replaced unless it returned. Each disk is written next to the original, then
    renamed over it, while no backup may read the VM.
    """
    info = adapter.describe(plan.vm, probe_guest=False)
    if info.power_state != "stopped":
        raise ReplaceDisksVmRunning(vm=plan.vm, state=info.power_state)
    current = {d.name: d for d in info.disks}
    missing = [n for n in plan.disks if n not in current]
    if missing:
        raise ReplaceDisksMismatch(vm=plan.vm, disks=", ".join(missing), point=plan.point_id, have=", ".join(current))
    # 1. keep what the VM has now as a recovery point: the replace can be undone
    ctx.subtask(BACKUP_CURRENT, percent=0)
    with adapter.snapshot(plan.vm) as snap:
        disks = [{"name": d.name, "size": d.size, "format": d.format} for d in snap.disks]
        meta = {**plan.meta, "definition": plan.meta.get("definition") or info.definition,
                "disks": disks, "nics": plan.meta.get("nics", info.nics)}
        summary = repo.backup(plan.item_id, plan.undo_point_id, list(snap.disks), meta, parent_point_id=plan.parent_point_id,
                              progress=ctx.progress_for(BACKUP_CURRENT), cancel=ctx.cancel)
    keep_undo(disks, summary.bytes_new)
    ctx.subtask(BACKUP_CURRENT, "Completed", 100, recovery_point=plan.undo_point_id)
    # 2. write each disk next to the original, then rename over it
    ctx.check_cancelled()
    ctx.subtask(REPLACE, percent=0)
    finals = {n: Path(current[n].path) for n in plan.disks}
    groups: dict[str, list[str]] = {}
    for n in plan.disks:
        groups.setdefault(current[n].format if current[n].format in ("raw", "qcow2") else "raw", []).append(n)
    partials: list[tuple[Path, Path]] = []
    release = adapter.acquire_vm(plan.vm, "backup")  # no backup reads the disks while they are replaced
    try:
        info = adapter.describe(plan.vm, probe_guest=False)
        if info.power_state != "stopped":
            raise ReplaceDisksVmRunning(vm=plan.vm, state=info.power_state)
        for fmt, names in groups.items():
            for n in names:
                final = finals[n]
                partial = final.with_name(f".{final.name}.haven-replace")
                repo.restore_disk(plan.item_id, plan.point_id, n, str(partial), fmt=fmt, progress=ctx.progress_for(f"Restore disk {n}"))
                partials.append((partial, final))
        for partial, final in partials:
            os.replace(partial, final)
    except BaseException:
        for partial, _ in partials:
            partial.unlink(missing_ok=True)
        raise
    finally:
        release()
    ctx.subtask(REPLACE, "Completed", 100)
    return ReplaceDisksOutcome(replaced={n: str(f) for n, f in finals.items()}, undo_stored_bytes=summary.bytes_new)

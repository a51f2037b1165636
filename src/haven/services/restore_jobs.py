"""The restore job handlers beyond restore-disks: a new VM (``RestoreVm``), disks put back into a VM
(``ReplaceDisks``), restore-disks from the paired region (``CrossRegionRestore``) and file recovery
(``FileRecovery``). Each plans and records here; the host's part is in ``haven.work``."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from haven.db.models import Host, ProtectedItem, RecoveryPoint, Subscription, Vault, VirtualMachine
from haven.db.types import new_id
from haven.domain.enums import JobType, ProtectionState
from haven.errors import HavenError
from haven.hypervisor.definitions import nic_notes
from haven.jobs.queue import Claimed
from haven.jobs.runner import Commit, JobContext
from haven.services.execution import JobHandlerBase, restore_where
from haven.services.points import PointNotFound
from haven.services.recording import PointRecord, record_point, withdraw_point
from haven.services.restore import mount_instructions
from haven.work import HOST_JOBS, run_cross_region_restore, run_replace_disks
from haven.work.plans import (
    FileRecoveryPlan,
    ReplaceDisksOutcome,
    ReplaceDisksPlan,
    RestoreDisksOutcome,
    RestorePlan,
    RestoreVmOutcome,
    RestoreVmPlan,
)
from haven.work.sessions import close_session, open_session

__all__ = ["RestoreVmHandler", "ReplaceDisksHandler", "CrossRegionRestoreHandler", "FileRecoveryHandler", "restore_handlers"]

log = logging.getLogger(__name__)


class _Base(JobHandlerBase):
    def _load(self, job: Claimed):
        p = job.params
        with self.core.db.session() as s:
            point = s.get(RecoveryPoint, p["point_id"])
            if point is None:
                raise PointNotFound(point=p["point_id"], vm=p.get("vm", "?"))
            vault = s.get(Vault, point.vault_id)
            s.expunge(vault)
            item_id, point_id = point.item_id, point.id
        repo = self.core.restore.open_repo(vault, bool(p.get("secondary")))
        return vault, item_id, point_id, repo

    def _job_host(self, job: Claimed) -> Host:
        with self.core.db.session() as s:
            host = s.get(Host, job.host_id)
            s.expunge(host)
        return host

    def _refresh_inventory(self, host: Host, adapter, what: str) -> None:
        try:
            self.core.inventory.report_vms(None, host.id, [v.to_dict() for v in adapter.list_vms()])
        except Exception:  # the agent refreshes its inventory on its own too
            log.exception("inventory refresh after %s failed", what)


class RestoreVmHandler(_Base):
    """Plan on the server, restore the disks and define the VM on the host (``run_restore_vm``), record here."""

    job_type = JobType.RESTORE_VM
    host_job = HOST_JOBS[JobType.RESTORE_VM]

    def plan(self, job: Claimed) -> RestoreVmPlan:
        p = job.params
        vault, item_id, point_id, repo = self._load(job)
        host = self._job_host(job)
        manifest = repo.load_point(item_id, point_id)
        meta = manifest.meta or {}
        # an encrypted VM: its keys must exist, and the backup service must be able to use them (seed 003, rows 2-4)
        self.core.keyvault.check_restore_vm(meta.get("encryption"), vault.subscription_id,
                                            restore_where(self.core, vault, item_id, point_id))
        return RestoreVmPlan(item_id=item_id, point_id=point_id, name=p["name"], format=p["format"], target=p.get("target"),
                             host=host.name, meta=meta, disks=[d.name for d in manifest.disks],
                             notes=nic_notes(meta.get("vm"), meta.get("nics") or []))

    def run(self, plan: RestoreVmPlan, ctx: JobContext) -> RestoreVmOutcome:
        _, _, _, repo = self._load(ctx.job)
        host = self._job_host(ctx.job)
        on_host = self._host(host)
        outcome = self.host_job.run(plan, on_host, repo, ctx)
        self._refresh_inventory(host, on_host.adapter, "restore-vm")
        return outcome

    def record(self, commit: Commit, job: Claimed, plan: RestoreVmPlan, outcome: RestoreVmOutcome, remote: bool = False) -> None:
        # a remote agent reports the new VM with its next inventory, sent right after
        commit(lambda s: {**outcome.to_dict(), "secondary_region": bool(job.params.get("secondary"))})


class CrossRegionRestoreHandler(_Base):
    """restore-disks from the paired region's copy; on the server's host (it alone reads the secondary region)."""

    job_type = JobType.CROSS_REGION_RESTORE

    def plan(self, job: Claimed) -> RestorePlan:
        p = job.params
        _, item_id, point_id, repo = self._load(job)
        manifest = repo.load_point(item_id, point_id)
        return RestorePlan(item_id=item_id, point_id=point_id, target=str(Path(p["target"])), disks=list(p["disks"]),
                           format=p["format"], meta=manifest.meta or {})

    def run(self, plan: RestorePlan, ctx: JobContext) -> RestoreDisksOutcome:
        _, _, _, repo = self._load(ctx.job)
        return run_cross_region_restore(plan, repo, ctx)

    def record(self, commit: Commit, job: Claimed, plan: RestorePlan, outcome: RestoreDisksOutcome, remote: bool = False) -> None:
        commit(lambda s: {"target": plan.target, "files": outcome.files, "region": job.params.get("region"),
                          "secondary_region": True})


class ReplaceDisksHandler(_Base):
    """Keep the VM's current disks as an undo point (recorded under the job's lease), then put the
    point's disks back (``run_replace_disks``); the server's host only."""

    job_type = JobType.REPLACE_DISKS

    def plan(self, job: Claimed) -> ReplaceDisksPlan:
        vault, item_id, point_id, _ = self._load(job)
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, item_id)
            machine = s.get(VirtualMachine, item.vm_id)
            host = s.get(Host, machine.host_id)
            vm_info = dict(machine.info or {})
            latest = s.scalar(select(RecoveryPoint.id).where(RecoveryPoint.item_id == item_id).order_by(RecoveryPoint.time.desc()).limit(1))
            started = self.core.clock.now()
            meta: dict[str, Any] = {"vm": machine.name, "vm_uuid": machine.uuid, "host": host.name, "region": vault.region,
                                    "time": started.isoformat(), "consistency": "CrashConsistent",
                                    "definition": vm_info.get("definition"), "encryption": vm_info.get("encryption"),
                                    "job_id": job.id, "trigger": "before-replace-disks", "replaced_by_point": point_id}
            if "nics" in vm_info:
                meta["nics"] = vm_info["nics"]
            return ReplaceDisksPlan(item_id=item_id, vault_id=vault.id, point_id=point_id, undo_point_id=new_id(),
                                    parent_point_id=latest, vm=machine.name, disks=list(job.params["disks"]),
                                    started=started.isoformat(), meta=meta)

    def run(self, plan: ReplaceDisksPlan, ctx: JobContext) -> ReplaceDisksOutcome:
        _, _, _, repo = self._load(ctx.job)
        with self.core.db.session() as s:
            host = s.get(Host, s.get(VirtualMachine, s.get(ProtectedItem, plan.item_id).vm_id).host_id)
            s.expunge(host)
        adapter = self.core.adapters.for_host(host)

        def keep_undo(disks: list[dict], stored_bytes: int) -> None:
            started = datetime.fromisoformat(plan.started)
            with self.core.db.session() as s:
                item = s.get(ProtectedItem, plan.item_id)
                days = (item.policy.retention or {}).get("daily_days") if item is not None and item.policy is not None else None
            point = PointRecord(point_id=plan.undo_point_id, item_id=plan.item_id, vault_id=plan.vault_id, job_id=ctx.job.id,
                                time=started, consistency="CrashConsistent", disks=disks, stored_bytes=stored_bytes,
                                expires_at=started + timedelta(days=days) if days else None)
            try:  # a restore may run on stopped protection, never on deleted data
                ctx.within_lease(lambda s: record_point(
                    s, point, plan.vm, (ProtectionState.PROTECTED.value, ProtectionState.PROTECTION_STOPPED.value)))
            except HavenError:
                withdraw_point(repo, plan.item_id, plan.undo_point_id)  # nothing is replaced without its undo point
                raise
            try:
                self.core.replication.after_backup(plan.vault_id, plan.item_id, plan.undo_point_id)
            except Exception:
                log.exception("replication after the pre-replace backup failed")

        outcome = run_replace_disks(plan, adapter, repo, ctx, keep_undo)
        self._refresh_inventory(host, adapter, "replace-disks")
        return outcome

    def record(self, commit: Commit, job: Claimed, plan: ReplaceDisksPlan, outcome: ReplaceDisksOutcome, remote: bool = False) -> None:
        def write(s) -> dict:
            row = s.get(ProtectedItem, plan.item_id)
            row.checkpoint = None  # the disks changed under any bitmap: the next backup compares everything
            return {"vm": plan.vm, "replaced": outcome.replaced, "recovery_point": plan.point_id,
                    "undo_recovery_point": plan.undo_point_id,
                    "undo": f"haven restore replace-disks --vm {plan.vm} --rp-name {plan.undo_point_id} (puts back the disks the VM had)"}

        commit(write)


class FileRecoveryHandler(_Base):
    """Serve a point's disks read-only over NBD on the server's host for a while (``work.sessions``)."""

    job_type = JobType.FILE_RECOVERY

    def plan(self, job: Claimed) -> FileRecoveryPlan:
        p = job.params
        _, item_id, point_id, _ = self._load(job)
        return FileRecoveryPlan(item_id=item_id, point_id=point_id, disks=list(p["disks"]),
                                seconds=max(1, int(round(float(p["hours"]) * 3600))),
                                sessions=str(self.core.restore.sessions_dir()), session_id=job.id, vm=p.get("vm"))

    def run(self, plan: FileRecoveryPlan, ctx: JobContext) -> dict:
        _, _, _, repo = self._load(ctx.job)
        return open_session(plan, repo, ctx, self.core.clock.now)

    def record(self, commit: Commit, job: Claimed, plan: FileRecoveryPlan, session: dict, remote: bool = False) -> None:
        with self.core.db.session() as s:
            vault = s.get(Vault, job.vault_id)
            subscription, vault_name = s.get(Subscription, vault.subscription_id).name, vault.name
        instructions = mount_instructions(session["exports"], plan.vm, plan.point_id, subscription, vault_name)
        try:
            commit(lambda s: {"session_id": session["session_id"], "expires_at": session["expires_at"],
                              "exports": session["exports"], "instructions": instructions})
        except BaseException:
            close_session(session)
            raise


def restore_handlers(core) -> dict[JobType, _Base]:
    """Job handlers this module adds (job type -> handler)."""
    return {JobType.RESTORE_VM: RestoreVmHandler(core), JobType.REPLACE_DISKS: ReplaceDisksHandler(core),
            JobType.CROSS_REGION_RESTORE: CrossRegionRestoreHandler(core), JobType.FILE_RECOVERY: FileRecoveryHandler(core)}

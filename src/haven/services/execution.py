"""The job handlers of backup, restore-disks and verify: each job type one class with ``plan`` (here),
``run`` (the host's part, in ``haven.work``) and ``record`` (here); their registry is ``handlers``.

One backup, one way: ``BackupHandler.plan`` fixes the point → ``work.run_backup`` on the VM's host
(snapshot, engine) → ``BackupHandler.record`` inserts the point (``recording.record_point``) in the
transaction that completes the job, only while the worker still holds the job's lease. The job
runner (``jobs.runner.perform``) drives the three for the server's own host; for a remote host the
agent API plans at claim (``AgentService.claim``) and records at completion (``AgentService.complete``),
and the agent runs ``work.HOST_JOBS``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from sqlalchemy import select

from haven.db.models import Host, Policy, ProtectedItem, RecoveryPoint, Subscription, Vault, VirtualMachine
from haven.db.types import new_id
from haven.domain.enums import Consistency, JobType, ProtectionState
from haven.errors import HavenError, PreconditionFailed
from haven.jobs.queue import Claimed
from haven.jobs.runner import Commit, JobContext
from haven.engine.verify import VerifyReport
from haven.services.lifecycle import VerifyPlan
from haven.services.recording import ItemNoLongerProtected, PointRecord, lock_item_for_point, record_point, withdraw_point
from haven.work import HOST_JOBS, Host as WorkHost, HostJob
from haven.work.plans import BackupOutcome, BackupPlan, RestoreDisksOutcome, RestorePlan, Wire

__all__ = ["JobHandlerBase", "restore_where", "BackupHandler", "RestoreHandler", "VerifyHandler", "ItemNoLongerProtected",
           "lock_item_for_point", "withdraw_point", "PointNotStored"]

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Wire)
O = TypeVar("O", bound=Wire)


class PointNotStored(PreconditionFailed):
    code = "UserErrorPointNotStored"
    message = "The agent reported recovery point {point} done, but its manifest is not in the vault's storage: nothing was recorded."
    recommendation = "Check the agent's connection to the vault's storage endpoint and run the backup again."


def restore_where(core, vault: Vault, item_id: str, point_id: str) -> dict[str, str]:
    """Where a restore is going, for the fixes of the seed-003 restore errors (their commands run as printed)."""
    with core.db.session() as s:
        item = s.get(ProtectedItem, item_id)
        vm = s.get(VirtualMachine, item.vm_id).name if item is not None else "<vm>"
        sub = s.get(Subscription, vault.subscription_id)
        return {"subscription": sub.name if sub else "<subscription>", "vault": vault.name, "vm": vm, "point": point_id,
                "region": vault.region}


class JobHandlerBase(Generic[P, O]):
    """A job type on the server. ``host_job``: its host part, when a remote host agent may run it."""

    job_type: JobType
    host_job: HostJob[P, O] | None = None

    def __init__(self, core):
        self.core = core

    def plan(self, job: Claimed) -> P:
        raise NotImplementedError

    def run(self, plan: P, ctx: JobContext) -> O:
        """The host part, run for the server's own host."""
        raise NotImplementedError

    def record(self, commit: Commit, job: Claimed, plan: P, outcome: O, remote: bool = False) -> None:
        raise NotImplementedError

    def failed(self, job: Claimed, cancelled: bool) -> None:
        return None

    # the agent API's side
    def plan_from(self, job_params: dict) -> P:
        assert self.host_job is not None
        return self.host_job.plan_type.from_dict(job_params["plan"])

    def outcome_from(self, outcome: dict) -> O:
        assert self.host_job is not None
        return self.host_job.outcome_type.from_dict(outcome)

    def _host(self, host: Host) -> WorkHost:
        return WorkHost(self.core.adapters.for_host(host), self.core.settings.home / "restored")


class BackupHandler(JobHandlerBase[BackupPlan, BackupOutcome]):
    """Plan on the server, run on the VM's host (``haven.work.run_backup``), record on the server."""

    job_type = JobType.BACKUP
    host_job = HOST_JOBS[JobType.BACKUP]

    def plan(self, job: Claimed) -> BackupPlan:
        return self._prepare(job.item_id, job.id)[0]

    def run(self, plan: BackupPlan, ctx: JobContext) -> BackupOutcome:
        with self.core.db.session() as s:
            vault = s.get(Vault, plan.vault_id)
            host = s.get(Host, s.get(VirtualMachine, s.get(ProtectedItem, plan.item_id).vm_id).host_id)
            s.expunge(vault)
            s.expunge(host)
        return self.host_job.run(plan, self._host(host), self.core.storage.open(vault), ctx)

    def _prepare(self, item_id: str, job_id: str) -> tuple[BackupPlan, Vault, Host]:
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, item_id)
            vm, vault = s.get(VirtualMachine, item.vm_id), s.get(Vault, item.vault_id)
            if item.state != ProtectionState.PROTECTED.value:
                raise ItemNoLongerProtected(vm=vm.name, state=item.state, job_id=job_id)
            host = s.get(Host, vm.host_id)
            parent = s.scalar(select(RecoveryPoint).where(RecoveryPoint.item_id == item.id).order_by(RecoveryPoint.time.desc()).limit(1))
            include = self._disks(vm.info or {}, item.include_disks, item.exclude_disks)
            info, checkpoint = dict(vm.info or {}), item.checkpoint
        encryption = info.get("encryption")
        # An encrypted VM is backed up only with its keys: BEK + KEK, and the backup service's access.
        self.core.keyvault.check_backup_access(encryption, vault.subscription_id)
        key_backup = self.core.keyvault.backup_keys(encryption, vault.subscription_id)
        started = self.core.clock.now()
        meta = {
            "vm": vm.name, "vm_uuid": vm.uuid, "host": host.name, "region": vault.region, "time": started.isoformat(),
            "definition": info.get("definition"), "nics": info.get("nics", []), "encryption": encryption,
            "key_backup": key_backup, "job_id": job_id,
        }
        plan = BackupPlan(item_id=item.id, vault_id=vault.id, point_id=new_id(), vm=vm.name, started=started.isoformat(),
                          meta=meta, parent_point_id=parent.id if parent else None,
                          checkpoint=checkpoint if parent else None, include_disks=include)
        return plan, vault, host

    def record(self, commit: Commit, job: Claimed, plan: BackupPlan, outcome: BackupOutcome, remote: bool = False) -> None:
        """Record the point in the transaction that completes the job (``commit``), then the after-steps
        (replication to the paired region, retention). A remote agent's point is recorded only once its
        manifest is found in storage, and it need not wait for the after-steps (they run on a thread)."""
        repo = None
        if remote:
            repo = self._open(plan.vault_id)
            self._confirm_stored(repo, plan, outcome)
        started = datetime.fromisoformat(plan.started)
        retain_until = job.params.get("retain_until")
        retain_until = datetime.fromisoformat(retain_until) if retain_until else None
        consistency = Consistency(self.consistency(outcome.consistency))
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, plan.item_id)
            vm_id = item.vm_id if item is not None else None  # a purged item: ``write`` refuses the point
            policy = s.get(Policy, item.policy_id) if item is not None and item.policy_id else None
            expires = retain_until or _expiry(policy, started)
        if vm_id is not None:
            self._record_extension_state(vm_id, outcome.extension)

        def write(s) -> dict:
            row = record_point(s, PointRecord(
                point_id=plan.point_id, item_id=plan.item_id, vault_id=plan.vault_id, job_id=job.id, time=started,
                consistency=consistency.value, disks=outcome.disks, stored_bytes=outcome.bytes_new, expires_at=expires,
                retain_until=retain_until, checkpoint=outcome.checkpoint,
            ), plan.vm, (ProtectionState.PROTECTED.value,))
            row.last_backup_time, row.last_success_time, row.checkpoint = started, started, outcome.checkpoint
            row.last_backup_status = "CompletedWithWarnings" if outcome.warned else "Completed"
            return {"recovery_point_id": plan.point_id, "consistency": consistency.value, "bytes_read": outcome.bytes_read,
                    "bytes_stored": outcome.bytes_new, "parent": plan.parent_point_id}

        try:
            commit(write)
        except HavenError:
            withdraw_point(repo or self._open(plan.vault_id), plan.item_id, plan.point_id)
            raise
        if remote:
            threading.Thread(target=self._after, args=(plan,), daemon=True, name=f"after-{plan.point_id[:8]}").start()
        else:
            self._after(plan)

    @staticmethod
    def consistency(level: str) -> str:
        from haven.work import consistency_label

        return consistency_label(level)

    def _open(self, vault_id: str):
        with self.core.db.session() as s:
            vault = s.get(Vault, vault_id)
            s.expunge(vault)
        return self.core.storage.open(vault)

    @staticmethod
    def _confirm_stored(repo, plan: BackupPlan, outcome: BackupOutcome) -> None:
        """Durability first: the manifest the agent wrote must be there, authentic, and match its report."""
        try:
            manifest = repo.load_point(plan.item_id, plan.point_id)
        except HavenError:
            raise PointNotStored(point=plan.point_id) from None
        if sorted(d.name for d in manifest.disks) != sorted(d["name"] for d in outcome.disks):
            raise PointNotStored(point=plan.point_id)

    def _after(self, plan: BackupPlan) -> None:
        for after in (lambda: self.core.replication.after_backup(plan.vault_id, plan.item_id, plan.point_id),
                      lambda: self.core.lifecycle.apply_retention(plan.item_id)):
            try:
                after()
            except Exception:  # the point is safely recorded; both run again later
                log.exception("post-backup step for item %s failed", plan.item_id)

    def _record_extension_state(self, vm_id: str, state: dict | None) -> None:
        """The backup extension's state in the guest, as the snapshot found it (readiness checks show it)."""
        if state is None:
            return
        with self.core.db.session() as s:
            row = s.get(VirtualMachine, vm_id)
            row.info = {**(row.info or {}), "extension": state}

    @staticmethod
    def _disks(info: dict, include: list | None, exclude: list | None) -> list[str] | None:
        if include:
            return list(include)
        if exclude:
            return [d["name"] for d in info.get("disks", []) if d["name"] not in exclude]
        return None

    def failed(self, job: Claimed, cancelled: bool) -> None:
        self.mark_failed(job.item_id, cancelled)

    def mark_failed(self, item_id: str | None, cancelled: bool) -> None:
        if not item_id:
            return
        with self.core.db.session() as s:
            row = s.get(ProtectedItem, item_id)
            if row is not None:
                row.last_backup_status = "Cancelled" if cancelled else "Failed"
                vault_id = row.vault_id
            else:
                vault_id = None
        if vault_id:  # its chunks are orphans now: reclaim their space soon
            self.core.lifecycle.request_gc(vault_id)


def _expiry(policy: Policy | None, when: datetime) -> datetime | None:
    """Until the retention engine runs, a point lives at least as long as the daily tier says."""
    if policy is None:
        return None
    days = (policy.retention or {}).get("daily_days")
    return when + timedelta(days=days) if days else None


class RestoreHandler(JobHandlerBase[RestorePlan, RestoreDisksOutcome]):
    """Restore disks: planned on the server, written on the target's host (``run_restore_disks``)."""

    job_type = JobType.RESTORE
    host_job = HOST_JOBS[JobType.RESTORE]

    def plan(self, job: Claimed) -> RestorePlan:
        params = job.params
        with self.core.db.session() as s:
            point = s.get(RecoveryPoint, params["point_id"])
            vault = s.get(Vault, point.vault_id)
            s.expunge(vault)
            item_id, point_id = point.item_id, point.id
        repo = self.core.storage.open(vault)
        manifest = repo.load_point(item_id, point_id)
        meta = getattr(manifest, "meta", {}) or {}
        # An encrypted VM's disks are only useful with their keys: refuse while they are gone (seed 003).
        self.core.keyvault.check_restore(meta.get("encryption"), vault.subscription_id, restore_where(self.core, vault, item_id, point_id))
        return RestorePlan(item_id=item_id, point_id=point_id, target=params["target"], disks=list(params["disks"]),
                           format=params["format"], meta=meta)

    def run(self, plan: RestorePlan, ctx: JobContext) -> RestoreDisksOutcome:
        with self.core.db.session() as s:
            vault = s.get(Vault, s.get(RecoveryPoint, plan.point_id).vault_id)
            s.expunge(vault)
        # restore-disks needs no adapter: the disks go to a folder of the host
        return self.host_job.run(plan, WorkHost(None, self.core.settings.home / "restored"), self.core.storage.open(vault), ctx)  # type: ignore[arg-type]

    def record(self, commit: Commit, job: Claimed, plan: RestorePlan, outcome: RestoreDisksOutcome, remote: bool = False) -> None:
        commit(lambda s: {"target": plan.target, "files": list(outcome.files)})


class VerifyHandler(JobHandlerBase[VerifyPlan, VerifyReport]):
    """Verify a vault, on the server only (``services/lifecycle.py`` holds the rules): the plan fixes the
    points it judges, the run reads the vault, the record marks points Corrupt or heals them."""

    job_type = JobType.VERIFY

    def plan(self, job: Claimed) -> VerifyPlan:
        return self.core.lifecycle.plan_verify(job)

    def run(self, plan: VerifyPlan, ctx: JobContext) -> VerifyReport:
        return self.core.lifecycle.verify_vault(plan, ctx)

    def record(self, commit: Commit, job: Claimed, plan: VerifyPlan, outcome: VerifyReport, remote: bool = False) -> None:
        self.core.lifecycle.record_verify(commit, plan, outcome)

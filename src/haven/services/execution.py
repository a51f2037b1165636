"""The job handlers that move data: backup (VM → vault) and restore (vault → disks).

One backup, one way: snapshot (hypervisor adapter) → engine (chunks, manifest) → recovery point
in the database, recorded in the transaction that completes the job and only while this worker
still holds the job's lease.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select

from haven.agent.work import BackupOutcome, BackupPlan, RestorePlan, consistency_label, run_backup, run_restore_disks
from haven.db.models import Host, Policy, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.db.types import new_id
from haven.domain.enums import Consistency, JobType, ProtectionState
from haven.errors import Conflict, HavenError
from haven.jobs.runner import JobContext

__all__ = ["BackupHandler", "RestoreHandler", "handlers", "ItemNoLongerProtected", "lock_item_for_point", "withdraw_point"]

log = logging.getLogger(__name__)


class ItemNoLongerProtected(Conflict):
    code = "UserErrorItemNoLongerProtected"
    message = "Item {vm!r} is {state} now: its protection was stopped or its data deleted while job {job_id} ran, so no recovery point was recorded."
    recommendation = "Resume protection (haven protection enable-for-vm --vm {vm}; undelete the item first if its data was deleted), then run the backup again."


def lock_item_for_point(s, item_id: str, job_id: str, vm: str, allowed: tuple[str, ...]) -> ProtectedItem:
    """The item a point is about to be recorded on, locked until the transaction ends, if its state still allows it.

    Called in the transaction that inserts the point: a stop of protection that commits first is seen here,
    one that comes later waits for this transaction (and then finds the job finished)."""
    row = s.get(ProtectedItem, item_id, with_for_update=True, populate_existing=True)
    if row is None or row.state not in allowed:
        raise ItemNoLongerProtected(vm=vm, state=row.state if row is not None else "deleted", job_id=job_id)
    return row

class BackupHandler:
    """Plan on the server, run on the VM's host (``haven.agent.work.run_backup``), record on the server."""

    def __init__(self, core):
        self.core = core

    def __call__(self, ctx: JobContext) -> None:
        try:
            plan, vault, host = self._prepare(ctx.job.item_id, ctx.job.id)
            repo = self.core.storage.open(vault)
            outcome = run_backup(plan, self.core.adapters.for_host(host), repo, ctx)
            self.record(ctx.commit, ctx.job, plan, outcome, repo)
        except HavenError:
            self.mark_failed(ctx.job.item_id, ctx.cancel.is_set() and not ctx.lease_lost.is_set())
            raise

    def plan(self, job) -> BackupPlan:
        return self._prepare(job.item_id, job.id)[0]

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

    def record(self, commit, job, plan: BackupPlan, outcome: BackupOutcome, repo, background: bool = False) -> None:
        """Record the point in the transaction that completes the job (``commit``), then the after-steps
        (replication to the paired region, retention) — on a thread of their own with ``background``."""
        started = datetime.fromisoformat(plan.started)
        retain_until = job.params.get("retain_until")
        retain_until = datetime.fromisoformat(retain_until) if retain_until else None
        consistency = Consistency(consistency_label(outcome.consistency))
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, plan.item_id)
            vm_id = item.vm_id if item is not None else None  # a purged item: ``write`` refuses the point
            policy = s.get(Policy, item.policy_id) if item is not None and item.policy_id else None
            expires = retain_until or _expiry(policy, started)
        if vm_id is not None:
            self._record_extension_state(vm_id, outcome.extension)

        def write(s) -> dict:
            row = lock_item_for_point(s, plan.item_id, job.id, plan.vm, (ProtectionState.PROTECTED.value,))
            s.add(RecoveryPoint(
                id=plan.point_id, item_id=plan.item_id, vault_id=plan.vault_id, job_id=job.id, time=started,
                consistency=consistency.value, size_bytes=sum(d["size"] for d in outcome.disks),
                stored_bytes=outcome.bytes_new, disks=outcome.disks, expires_at=expires, retain_until=retain_until,
                checkpoint=outcome.checkpoint,
            ))
            row.last_backup_time, row.last_success_time, row.checkpoint = started, started, outcome.checkpoint
            row.last_backup_status = "CompletedWithWarnings" if outcome.warned else "Completed"
            return {"recovery_point_id": plan.point_id, "consistency": consistency.value, "bytes_read": outcome.bytes_read,
                    "bytes_stored": outcome.bytes_new, "parent": plan.parent_point_id}

        try:
            commit(write)
        except HavenError:
            withdraw_point(repo, plan.item_id, plan.point_id)
            raise
        if background:
            threading.Thread(target=self._after, args=(plan,), daemon=True, name=f"after-{plan.point_id[:8]}").start()
        else:
            self._after(plan)

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


def withdraw_point(repo, item_id: str, point_id: str) -> None:
    """The point's manifest is written but the point could not be recorded (lease lost, item no longer
    protected): withdraw it from storage too."""
    try:
        repo.delete_point(item_id, point_id)
    except Exception:  # GC finds it later; never hide the original error
        log.exception("could not withdraw point %s that was not recorded", point_id)


class RestoreHandler:
    """Restore disks: planned on the server, written on the target's host (``run_restore_disks``)."""

    def __init__(self, core):
        self.core = core

    def __call__(self, ctx: JobContext) -> None:
        plan, repo = self._prepare(ctx.job.params)
        files = run_restore_disks(plan, repo, ctx)
        ctx.commit(lambda s: {"target": plan.target, "files": files})

    def plan(self, job) -> RestorePlan:
        return self._prepare(job.params)[0]

    def _prepare(self, params: dict):
        """The plan, and the vault's repository it was read from (the same one writes the disks)."""
        with self.core.db.session() as s:
            point = s.get(RecoveryPoint, params["point_id"])
            vault = s.get(Vault, point.vault_id)
            item_id = point.item_id
        repo = self.core.storage.open(vault)
        manifest = repo.load_point(item_id, point.id)
        meta = getattr(manifest, "meta", {}) or {}
        # An encrypted VM's disks are only useful with their keys: refuse while they are gone (seed 003).
        self.core.keyvault.check_restore(meta.get("encryption"), vault.subscription_id)
        plan = RestorePlan(item_id=item_id, point_id=point.id, target=params["target"], disks=list(params["disks"]),
                           format=params["format"], meta=meta)
        return plan, repo


def handlers(core) -> dict:
    from haven.services.restore import restore_handlers

    return {JobType.BACKUP.value: BackupHandler(core), JobType.RESTORE.value: RestoreHandler(core),
            JobType.VERIFY.value: core.lifecycle.run_verify, **restore_handlers(core)}

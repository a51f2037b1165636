"""The job handlers that move data: backup (VM → vault) and restore (vault → disks).

One backup, one way: snapshot (hypervisor adapter) → engine (chunks, manifest) → recovery point
in the database, recorded in the transaction that completes the job and only while this worker
still holds the job's lease.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from haven.db.models import Host, Policy, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.db.types import new_id
from haven.domain.enums import Consistency, JobType
from haven.errors import HavenError
from haven.jobs.runner import JobContext

__all__ = ["BackupHandler", "RestoreHandler", "handlers"]

log = logging.getLogger(__name__)

_CONSISTENCY = {"application": Consistency.APPLICATION, "filesystem": Consistency.FILE_SYSTEM, "crash": Consistency.CRASH}
SNAPSHOT = "Take snapshot"
TRANSFER = "Transfer data to vault"


class BackupHandler:
    def __init__(self, core):
        self.core = core

    def __call__(self, ctx: JobContext) -> None:
        try:
            self._run(ctx)
        except HavenError:
            self._mark_item(ctx.job.item_id, "Cancelled" if ctx.cancel.is_set() and not ctx.lease_lost.is_set() else "Failed")
            raise

    def _run(self, ctx: JobContext) -> None:
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, ctx.job.item_id)
            vm, vault = s.get(VirtualMachine, item.vm_id), s.get(Vault, item.vault_id)
            host = s.get(Host, vm.host_id)
            policy = s.get(Policy, item.policy_id) if item.policy_id else None
            parent = s.scalar(select(RecoveryPoint).where(RecoveryPoint.item_id == item.id).order_by(RecoveryPoint.time.desc()).limit(1))
            parent_id, checkpoint = (parent.id, item.checkpoint) if parent else (None, None)
            include = self._disks(vm.info or {}, item.include_disks, item.exclude_disks)
        encryption = (vm.info or {}).get("encryption")
        # An encrypted VM is backed up only with its keys: BEK + KEK, and the backup service's access.
        self.core.keyvault.check_backup_access(encryption, vault.subscription_id)
        key_backup = self.core.keyvault.backup_keys(encryption, vault.subscription_id)
        adapter = self.core.adapters.for_host(host)
        ctx.subtask(SNAPSHOT, percent=0)
        started = self.core.clock.now()
        point_id = new_id()
        with adapter.snapshot(vm.name, previous_checkpoint=checkpoint, include_disks=include) as snap:
            for warning in snap.warnings:
                ctx.warn(warning)
            if snap.tracking_lost:
                ctx.warn("Changed-block tracking was lost since the last backup (VM restarted or bitmap missing): "
                         "this backup read every allocated block, compared it with the last recovery point and stored only what changed. Tracking restarts now.")
            consistency = _CONSISTENCY.get(snap.consistency, Consistency.CRASH)
            self._record_extension_state(vm.id, snap)
            ctx.subtask(SNAPSHOT, "Completed", 100, consistency=consistency.value)
            ctx.check_cancelled()
            ctx.subtask(TRANSFER, percent=0)
            meta = {
                "vm": vm.name, "vm_uuid": vm.uuid, "host": host.name, "region": vault.region,
                "time": started.isoformat(), "consistency": consistency.value,
                "definition": (vm.info or {}).get("definition"), "disks": [{"name": d.name, "size": d.size, "format": d.format} for d in snap.disks],
                "nics": (vm.info or {}).get("nics", []), "encryption": encryption, "key_backup": key_backup,
                "job_id": ctx.job.id,
            }
            repo = self.core.storage.open(vault)
            summary = repo.backup(item.id, point_id, list(snap.disks), meta, parent_point_id=parent_id,
                                  progress=ctx.progress_for(TRANSFER), cancel=ctx.cancel)
            new_checkpoint = snap.checkpoint
        ctx.subtask(TRANSFER, "Completed", 100, bytes_read=summary.bytes_read, bytes_stored=summary.bytes_new)
        retain_until = ctx.job.params.get("retain_until")
        retain_until = datetime.fromisoformat(retain_until) if retain_until else None
        expires = retain_until or _expiry(policy, started)

        def record(s) -> dict:
            s.add(RecoveryPoint(
                id=point_id, item_id=item.id, vault_id=vault.id, job_id=ctx.job.id, time=started,
                consistency=consistency.value, size_bytes=sum(d.size for d in snap.disks),
                stored_bytes=summary.bytes_new, disks=meta["disks"], expires_at=expires, retain_until=retain_until,
                checkpoint=new_checkpoint,
            ))
            row = s.get(ProtectedItem, item.id)
            row.last_backup_time, row.last_success_time, row.checkpoint = started, started, new_checkpoint
            row.last_backup_status = "CompletedWithWarnings" if snap.warnings or snap.tracking_lost else "Completed"
            return {"recovery_point_id": point_id, "consistency": consistency.value, "bytes_read": summary.bytes_read,
                    "bytes_stored": summary.bytes_new, "parent": parent_id}

        try:
            ctx.commit(record)
        except HavenError:
            _forget_point(repo, item.id, point_id)
            raise
        for after in (lambda: self.core.replication.after_backup(vault.id, item.id, point_id),
                      lambda: self.core.lifecycle.apply_retention(item.id)):
            try:
                after()
            except Exception:  # the point is safely recorded; both run again later
                log.exception("post-backup step for item %s failed", item.id)

    def _record_extension_state(self, vm_id: str, snap) -> None:
        """The backup extension's state in the guest, as the snapshot found it (readiness checks show it)."""
        state = getattr(snap, "extension", None)
        if state is None:
            return
        with self.core.db.session() as s:
            row = s.get(VirtualMachine, vm_id)
            row.info = {**(row.info or {}), "extension": state.to_dict() if hasattr(state, "to_dict") else state}

    @staticmethod
    def _disks(info: dict, include: list | None, exclude: list | None) -> list[str] | None:
        if include:
            return list(include)
        if exclude:
            return [d["name"] for d in info.get("disks", []) if d["name"] not in exclude]
        return None

    def _mark_item(self, item_id: str | None, status: str) -> None:
        if not item_id:
            return
        with self.core.db.session() as s:
            row = s.get(ProtectedItem, item_id)
            if row is not None:
                row.last_backup_status = status


def _expiry(policy: Policy | None, when: datetime) -> datetime | None:
    """Until the retention engine runs, a point lives at least as long as the daily tier says."""
    if policy is None:
        return None
    days = (policy.retention or {}).get("daily_days")
    return when + timedelta(days=days) if days else None


def _forget_point(repo, item_id: str, point_id: str) -> None:
    """The job lost its lease after the manifest was written: withdraw the point from storage too."""
    try:
        repo.delete_point(item_id, point_id)
    except Exception:  # GC finds it later; never hide the original error
        log.exception("could not withdraw point %s after a lost lease", point_id)


class RestoreHandler:
    def __init__(self, core):
        self.core = core

    def __call__(self, ctx: JobContext) -> None:
        p = ctx.job.params
        with self.core.db.session() as s:
            point = s.get(RecoveryPoint, p["point_id"])
            vault = s.get(Vault, point.vault_id)
            item_id = point.item_id
        repo = self.core.storage.open(vault)
        manifest = repo.load_point(item_id, point.id)
        # An encrypted VM's disks are only useful with their keys: refuse while they are gone (seed 003).
        self.core.keyvault.check_restore((manifest.meta or {}).get("encryption"), vault.subscription_id)
        target = Path(p["target"])
        target.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for name in p["disks"]:
                ctx.check_cancelled()
                final = target / f"{name}.{p['format']}"
                partial = target / f".{name}.{p['format']}.partial"
                ctx.subtask(f"Restore disk {name}", percent=0)
                repo.restore_disk(item_id, point.id, name, str(partial), fmt=p["format"], progress=ctx.progress_for(f"Restore disk {name}"))
                written.append(partial)
                ctx.subtask(f"Restore disk {name}", "Completed", 100)
            files = []
            for partial in written:
                final = target / partial.name[1:].removesuffix(".partial")
                partial.rename(final)
                files.append(str(final))
            from haven.services.restore import write_vm_definition

            meta = getattr(manifest, "meta", {}) or {}
            disk_files = {Path(f).name.removesuffix(f".{p['format']}"): f for f in files}
            files += write_vm_definition(target, meta, disk_files, point.id)  # libvirt XML + JSON template
        except BaseException:
            for f in written:
                f.unlink(missing_ok=True)
            raise
        ctx.commit(lambda s: {"target": str(target), "files": files})


def handlers(core) -> dict:
    from haven.services.restore import restore_handlers

    return {JobType.BACKUP.value: BackupHandler(core), JobType.RESTORE.value: RestoreHandler(core),
            JobType.VERIFY.value: core.lifecycle.run_verify, **restore_handlers(core)}

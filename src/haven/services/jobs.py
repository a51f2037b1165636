"""Jobs you can watch: list with filters, show with subtasks, stop."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from haven.db.models import Job, ProtectedItem, VirtualMachine
from haven.domain.enums import JobStatus, JobType, Role
from haven.errors import UserError
from haven.jobs.queue import JobNotFound
from haven.services.auth import Caller
from haven.services.paging import Keyset

__all__ = ["JobService"]

#: newest first; the id breaks ties of one instant
JOBS = Keyset("jobs", ((Job.created_at, True), (Job.id, True)))


class JobFilterInvalid(UserError):
    code = "UserErrorJobFilterInvalid"
    message = "Unknown {field} {value!r}; known values: {known}."
    recommendation = "Use one of the known values."


class JobService:
    def __init__(self, core):
        self.core = core

    def list(self, caller: Caller, subscription: str, vault_name: str, status: str | None = None, type: str | None = None,
             vm: str | None = None, start: datetime | None = None, end: datetime | None = None, limit: int = 100,
             types: tuple[str, ...] | None = None) -> list[dict]:
        return self.page(caller, subscription, vault_name, status, type, vm, start, end, limit, types=types)[0]

    def page(self, caller: Caller, subscription: str, vault_name: str, status: str | None = None, type: str | None = None,
             vm: str | None = None, start: datetime | None = None, end: datetime | None = None, limit: int = 100,
             cursor: str | None = None, types: tuple[str, ...] | None = None) -> tuple[list[dict], str | None]:
        """Newest first, ``limit`` at a time: the jobs after ``cursor`` and the cursor of the next page (None at the end).
        Keyset pagination on (created_at, id): a page costs the same however deep it is, and jobs added meanwhile
        never shift a page."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            _check(status, JobStatus, "status")
            _check(type, JobType, "type")
            q = select(Job).where(Job.vault_id == vault.id)
            if status:
                q = q.where(Job.status == status)
            if type:
                q = q.where(Job.type == type)
            if types:
                for t in types:
                    _check(t, JobType, "type")
                q = q.where(Job.type.in_(types))
            if vm:
                q = q.join(ProtectedItem, Job.item_id == ProtectedItem.id).join(VirtualMachine).where(VirtualMachine.name == vm)
            if start:
                q = q.where(Job.created_at >= start)
            if end:
                q = q.where(Job.created_at <= end)
            rows, following = JOBS.page(s, q, limit, cursor, lambda j: (j.created_at, j.id))
            names = self._vm_names(s, rows)
            return [self.view(j, vm_name=names.get(j.item_id)) for j in rows], following

    @staticmethod
    def _vm_names(s, jobs: list[Job]) -> dict[str, str]:
        """item id -> VM name for a page of jobs, in one query."""
        ids = {j.item_id for j in jobs if j.item_id}
        if not ids:
            return {}
        rows = s.execute(select(ProtectedItem.id, VirtualMachine.name).join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)
                         .where(ProtectedItem.id.in_(ids)))
        return dict(rows.all())

    def show(self, caller: Caller, subscription: str, job_id: str) -> dict:
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription)
            job = s.get(Job, job_id)
            if job is None or job.subscription_id != sub.id:
                raise JobNotFound(job_id=job_id)
            return self.view(job, s)

    def stop(self, caller: Caller, subscription: str, job_id: str) -> dict:
        with self.core.db.session() as s:
            self.core.subscriptions.get_visible(s, caller, subscription, Role.OPERATOR)
        self.show(caller, subscription, job_id)  # exists, and in this subscription
        job = self.core.queue.request_cancel(job_id)
        with self.core.db.session() as s:
            return self.view(s.get(Job, job.id), s)

    def view(self, job: Job, s=None, vm_name: str | None = None) -> dict:
        vm = vm_name
        if vm is None and s is not None and job.item_id:
            item = s.get(ProtectedItem, job.item_id)
            vm = s.get(VirtualMachine, item.vm_id).name if item else None
        duration = None
        if job.started_at:
            duration = ((job.ended_at or self.core.clock.now()) - job.started_at).total_seconds()
        error = None
        if job.error_code:
            error = {"code": job.error_code, "message": job.error_message, "recommendation": job.error_recommendation}
        return {
            "id": job.id,
            "operation": job.operation,
            "type": job.type,
            "status": job.status,
            "vm": vm,
            "vault_id": job.vault_id,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "ended_at": job.ended_at,
            "duration_seconds": duration,
            "subtasks": _settled(job.subtasks or [], job.status),
            "warnings": job.warnings or [],
            "error": error,
            "result": job.result or {},
        }


_UNFINISHED = ("InProgress", "NotStarted")


def _settled(subtasks: list[dict], status: str) -> list[dict]:
    """A job that failed or was cancelled leaves no subtask running: what it was doing ended with it."""
    if status not in (JobStatus.FAILED.value, JobStatus.CANCELLED.value):
        return subtasks
    return [{**t, "status": status} if t.get("status") in _UNFINISHED else t for t in subtasks]


def _check(value, enum, field) -> None:
    if value is not None and value not in {e.value for e in enum}:
        raise JobFilterInvalid(field=field, value=value, known=", ".join(e.value for e in enum))

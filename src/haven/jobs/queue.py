"""A durable job queue in the metadata store, with leases and heartbeats.

Claiming is a conditional UPDATE (``WHERE id = :id AND status = 'Queued'``) whose row count says
who won. That is safe on SQLite (one writer at a time) and on PostgreSQL under READ COMMITTED (the
losing UPDATE waits for the winner, re-checks the condition and updates nothing), so several
workers — threads or processes on several machines — can claim from one queue.

A claimed job carries a lease (``lease_owner``, ``lease_expires_at``) that its worker renews by
heartbeat. ``reap_expired`` finds jobs whose lease ran out (worker died or hung): they go back to
the queue while attempts remain, otherwise they fail with ``JobLeaseExpired``. Nothing stays
"in progress" forever.

A job that fails with a transient error (storage or network trouble, a busy vault) while attempts
remain goes back to the queue too, to be claimed again after a backoff (``retry_delay``): a
scheduled backup gets several attempts inside its window instead of waiting a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from haven.clock import Clock
from haven.db.models import Job
from haven.db.session import Database
from haven.domain.enums import JobStatus
from haven.engine.errors import RepositoryLocked
from haven.errors import Conflict, HavenError, NotFound
from haven.jobs.limits import hold_limit_row
from haven.jobs.wakeup import Wakeup

__all__ = ["JobQueue", "LeaseLost", "JobNotFound", "JobNotCancellable", "Claimed", "retryable", "retry_delay"]

#: The first retry waits this long; each further one four times as long, up to ``RETRY_MAX``.
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(minutes=30)


def retryable(error: HavenError) -> bool:
    """May a new attempt succeed? Transient failures and a vault that is busy for now."""
    return error.transient or isinstance(error, RepositoryLocked)


def retry_delay(attempt: int) -> timedelta:
    """The wait before attempt ``attempt + 1`` (attempts count from 1)."""
    return min(RETRY_MAX, RETRY_FIRST * 4 ** max(0, attempt - 1))


class JobNotFound(NotFound):
    code = "UserErrorJobNotFound"
    message = "Job {job_id!r} does not exist."
    recommendation = "List jobs with 'haven job list' to find the right id."


class JobNotCancellable(Conflict):
    code = "UserErrorJobNotCancellable"
    message = "Job {job_id!r} has already finished ({status}) and cannot be stopped."
    recommendation = "Nothing to do: only queued or running jobs can be stopped."


class LeaseLost(HavenError):
    code = "JobLeaseExpired"
    message = "The worker running this job stopped renewing its lease, so the job was taken from it."
    recommendation = "Check that the server and host agent stay up during backups; run the backup again."
    http_status = 409
    exit_code = 4


@dataclass(frozen=True)
class Claimed:
    id: str
    type: str
    operation: str
    params: dict[str, Any]
    item_id: str | None
    vault_id: str | None
    host_id: str | None
    attempt: int

    @classmethod
    def of(cls, job: Job) -> "Claimed":
        return cls(job.id, job.type, job.operation, dict(job.params), job.item_id, job.vault_id, job.host_id, job.attempts)


_ACTIVE = (JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value)


class JobQueue:
    def __init__(self, db: Database, clock: Clock, lease_seconds: float = 60.0,
                 max_backups_per_host: int = 2, max_backups_per_vault: int = 4):
        self.db, self.clock, self.lease = db, clock, timedelta(seconds=lease_seconds)
        #: concurrent backups allowed per host and per vault (checked when a job is claimed)
        self.limits = {"host_id": max_backups_per_host, "vault_id": max_backups_per_vault}
        #: wakes this process's idle workers when a job is enqueued or ends (they poll the database too)
        self.wakeup = Wakeup()

    # ---- producers -------------------------------------------------------------------------

    def enqueue(self, session, *, type: str, operation: str, params: dict | None = None, **columns) -> Job:
        """Add a job in the caller's transaction (so the job and what it stands for commit together)."""
        job = Job(
            type=type,
            operation=operation,
            status=JobStatus.QUEUED.value,
            params=params or {},
            created_at=self.clock.now(),
            subtasks=[],
            warnings=[],
            result={},
            **columns,
        )
        session.add(job)
        session.flush()
        self.wakeup.after_commit(session)
        return job

    # ---- workers ---------------------------------------------------------------------------

    def claim(self, worker: str, types: tuple[str, ...] | None = None, host_id: str | None = None,
              unassigned: bool = True) -> Claimed | None:
        """Take the oldest queued job this worker may run, or None.

        With ``host_id``, only that host's jobs, and (``unassigned``) jobs bound to no host.
        """
        now = self.clock.now()
        with self.db.session() as s:
            q = select(Job.id).where(Job.status == JobStatus.QUEUED.value)
            q = q.where(or_(Job.not_before.is_(None), Job.not_before <= now))
            if types:
                q = q.where(Job.type.in_(types))
            if host_id is not None:
                q = q.where(or_(Job.host_id.is_(None), Job.host_id == host_id) if unassigned else Job.host_id == host_id)
            candidates = s.scalars(q.order_by(Job.created_at).limit(5)).all()
        for job_id in candidates:
            with self.db.session() as s:
                if self._at_limit(s, job_id):
                    continue
                won = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                    .values(
                        status=JobStatus.IN_PROGRESS.value,
                        lease_owner=worker,
                        lease_expires_at=now + self.lease,
                        started_at=now,
                        attempts=Job.attempts + 1,
                    )
                ).rowcount
                if won == 1:
                    return Claimed.of(s.get(Job, job_id))
        return None

    def _at_limit(self, s, job_id: str) -> bool:
        """A backup waits while its host or vault already runs as many backups as allowed.

        The count and the claim are one transaction holding the host's and the vault's row (``jobs/limits.py``).
        """
        job = s.get(Job, job_id)
        if job is None or job.type != "Backup":
            return False
        for column, limit in self.limits.items():
            key = getattr(job, column)
            if key is None:
                continue
            hold_limit_row(s, column, key)
            running = s.scalar(select(func.count()).select_from(Job).where(
                Job.type == "Backup", Job.status.in_(_ACTIVE), getattr(Job, column) == key))
            if running >= limit:
                return True
        return False

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Renew the lease. False when the lease was lost: the worker must stop and record nothing.

        Also returns whether a cancel was requested through ``cancel_requested``.
        """
        now = self.clock.now()
        with self.db.session() as s:
            n = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == worker, Job.status.in_(_ACTIVE), Job.lease_expires_at > now)
                .values(lease_expires_at=now + self.lease)
            ).rowcount
        return n == 1

    def holds_lease(self, session, job_id: str, worker: str) -> bool:
        """Inside the caller's transaction: does ``worker`` still hold a live lease on the job?

        A backup checks this in the same transaction that records its recovery point, so a
        worker whose lease expired never records anything.
        """
        now = self.clock.now()
        row = session.execute(
            select(Job.id)
            .where(Job.id == job_id, Job.lease_owner == worker, Job.status.in_(_ACTIVE), Job.lease_expires_at > now)
            .with_for_update()
        ).first()
        return row is not None

    def cancel_requested(self, job_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def update_progress(self, job_id: str, worker: str, subtasks: list[dict]) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == worker).values(subtasks=subtasks))

    def add_warning(self, job_id: str, warning: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.warnings = [*job.warnings, warning]

    def finish(self, session, job_id: str, worker: str, result: dict | None = None) -> JobStatus:
        """Complete the job inside the caller's transaction; raise LeaseLost if it is not ours any more."""
        job = session.get(Job, job_id, with_for_update=True)
        now = self.clock.now()
        if job is None or job.lease_owner != worker or job.status not in _ACTIVE or job.lease_expires_at <= now:
            raise LeaseLost(job_id=job_id)
        status = JobStatus.COMPLETED_WITH_WARNINGS if job.warnings else JobStatus.COMPLETED
        job.status, job.ended_at, job.result = status.value, now, result or {}
        job.lease_owner = job.lease_expires_at = None
        self.wakeup.after_commit(session)
        return status

    def fail(self, job_id: str, worker: str, error: HavenError, cancelled: bool = False) -> bool:
        """End the worker's attempt. True if the job was queued again for a later attempt (a
        retryable error with attempts left), False if it failed or was cancelled for good."""
        now = self.clock.now()
        with self.db.session() as s:
            self.wakeup.after_commit(s)
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.lease_owner != worker:
                return False  # the reaper already took it; it decides the outcome
            job.lease_owner = job.lease_expires_at = None
            if not cancelled and not job.cancel_requested and retryable(error) and job.attempts < job.max_attempts:
                when = now + retry_delay(job.attempts)
                job.status, job.not_before = JobStatus.QUEUED.value, when
                job.warnings = [*job.warnings, f"Attempt {job.attempts} of {job.max_attempts} failed ({error.code}: "
                                               f"{error.text}); retrying at {when.isoformat()}."]
                return True
            job.status = (JobStatus.CANCELLED if cancelled else JobStatus.FAILED).value
            job.ended_at = now
            job.error_code, job.error_message, job.error_recommendation = error.code, error.text, error.fix
            return False

    # ---- users -----------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> Job:
        """Queued jobs are cancelled at once; running ones are asked to stop and clean up."""
        now = self.clock.now()
        with self.db.session() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise JobNotFound(job_id=job_id)
            status = JobStatus(job.status)
            if status.finished:
                raise JobNotCancellable(job_id=job_id, status=status.value)
            job.cancel_requested = True
            if status is JobStatus.QUEUED:
                job.status, job.ended_at = JobStatus.CANCELLED.value, now
                job.error_code, job.error_message = "UserCancelled", "The job was stopped before it started."
                job.error_recommendation = "Start the operation again when you need it."
            elif status is JobStatus.IN_PROGRESS:
                job.status = JobStatus.CANCELLING.value
            return job

    # ---- the reaper --------------------------------------------------------------------------

    def reap_expired(self) -> list[str]:
        """Requeue or fail every job whose lease ran out. Returns the ids it touched."""
        now = self.clock.now()
        touched: list[str] = []
        with self.db.session() as s:
            stale = s.scalars(
                select(Job).where(Job.status.in_(_ACTIVE), Job.lease_expires_at <= now).with_for_update()
            ).all()
            for job in stale:
                touched.append(job.id)
                job.lease_owner = job.lease_expires_at = None
                if job.attempts < job.max_attempts and not job.cancel_requested:
                    job.status = JobStatus.QUEUED.value
                    continue
                err = LeaseLost(job_id=job.id)
                job.status = JobStatus.CANCELLED.value if job.cancel_requested else JobStatus.FAILED.value
                job.ended_at = now
                job.error_code, job.error_message, job.error_recommendation = err.code, err.text, err.fix
        return touched

    def get(self, job_id: str) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id=job_id)
            return job

    def wait_until_finished(self, job_id: str, timeout: float, poll: float = 0.2) -> Job:
        import time

        end = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if JobStatus(job.status).finished or time.monotonic() > end:
                return job
            time.sleep(poll)

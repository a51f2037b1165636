"""Runs queued jobs on worker threads: claim, heartbeat, cancel, and record the outcome.

Each job type has a handler (``JobHandler``): ``plan`` on the server, ``run`` on the VM's host,
``record`` on the server. ``perform`` drives the three for the server's own host; a remote host
agent runs the middle step and the agent API the other two. ``record`` stores what the job produced
with ``commit(fn)``: ``fn(session)`` runs in the same transaction that marks the job finished, and
only while the worker still holds the job's lease (``commit_under_lease``, the one lease-checked
commit). A worker that lost its lease therefore records nothing. A plain function of the context is
a handler too (tests, jobs without a host part).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from haven.domain.enums import JobStatus
from haven.db.session import database_error
from haven.errors import HavenError, InternalError
from haven.jobs.queue import Claimed, JobQueue, LeaseLost

__all__ = ["WorkContext", "JobContext", "JobRunner", "JobCancelled", "Handler", "JobHandler", "Commit", "Record",
           "commit_under_lease", "perform", "PROGRESS_EVERY"]

#: the most often a job's progress is written to the database (the last value is always written)
PROGRESS_EVERY = 1.0

Record = Callable[[Any], "dict | None"]
Commit = Callable[[Record], JobStatus]


def commit_under_lease(queue: JobQueue, job_id: str, worker: str, record: Record | None, finish: bool = True) -> JobStatus | None:
    """Run ``record(session)`` in one transaction with the job's completion (``finish``), only while
    ``worker`` holds the job's lease; raise ``LeaseLost`` otherwise. Without ``finish`` the job goes on
    (a step whose result must be kept before the job continues, such as a replace's undo point)."""
    with queue.db.session() as s:
        if not queue.holds_lease(s, job_id, worker):
            raise LeaseLost(job_id=job_id)
        result = record(s) if record else None
        return queue.finish(s, job_id, worker, result or {}) if finish else None

log = logging.getLogger(__name__)


class JobCancelled(HavenError):
    code = "UserCancelled"
    message = "The job was stopped by a user; nothing it had started was recorded."
    recommendation = "Start the operation again when you need it."
    http_status = 409
    exit_code = 4


class WorkContext:
    """What a handler sees of its job: subtasks with percent done, a cancel event, a lost-lease event.

    Subclasses say where subtasks go (``_publish``) and where warnings go (``warn``): the job queue
    for in-process workers, the agent API for a remote agent.
    """

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.cancel = threading.Event()
        self.lease_lost = threading.Event()
        self._subtasks: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def subtask(self, name: str, status: str = "InProgress", percent: float | None = None, **extra) -> None:
        with self._lock:
            entry = next((t for t in self._subtasks if t["name"] == name), None)
            changed = entry is None or entry.get("status") != status
            if entry is None:
                entry = {"name": name}
                self._subtasks.append(entry)
            entry.update(status=status, **extra)
            if percent is not None:
                entry["percent"] = round(min(100.0, max(0.0, percent)), 1)
            snapshot = [dict(t) for t in self._subtasks]
        self._publish(snapshot, changed)

    def _publish(self, subtasks: list[dict], changed: bool) -> None:
        raise NotImplementedError

    def warn(self, message: str) -> None:
        raise NotImplementedError

    def progress_for(self, name: str):
        """A ``haven.progress.Progress`` that reports into the named subtask."""
        ctx = self

        class _P:
            def update(self, done: int, total: int | None = None, phase: str | None = None) -> None:
                pct = (100.0 * done / total) if total else None
                ctx.subtask(name, percent=pct, done=done, total=total)

        return _P()

    def check_cancelled(self) -> None:
        if self.lease_lost.is_set():
            raise LeaseLost(job_id=self.job_id)
        if self.cancel.is_set():
            raise JobCancelled()


class JobContext(WorkContext):
    """A job run by this process: progress goes to the job's row, at most every ``PROGRESS_EVERY``
    seconds (a status change at once, the last value before the job ends always)."""

    def __init__(self, queue: JobQueue, job: Claimed, worker: str, every: float = PROGRESS_EVERY):
        super().__init__(job.id)
        self.queue, self.job, self.worker = queue, job, worker
        self.committed = False
        self.every = every
        self._pending: list[dict] | None = None
        self._written = float("-inf")
        self._write_lock = threading.Lock()

    def _publish(self, subtasks: list[dict], changed: bool) -> None:
        with self._write_lock:
            self._pending = subtasks
        if changed or time.monotonic() - self._written >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the latest progress, if not written yet."""
        with self._write_lock:
            subtasks, self._pending = self._pending, None
            if subtasks is None:
                return
            self._written = time.monotonic()
            self.queue.update_progress(self.job.id, self.worker, subtasks)

    def flush_due(self) -> None:
        """Write progress held back by the throttle once it is due (the heartbeat calls this)."""
        if self._pending is not None and time.monotonic() - self._written >= self.every:
            self.flush()

    def warn(self, message: str) -> None:
        self.queue.add_warning(self.job.id, message)

    def commit(self, record: Record | None = None) -> JobStatus:
        """Record the job's outcome atomically with its completion, if we still hold the lease."""
        self.check_cancelled()
        self.flush()
        status = commit_under_lease(self.queue, self.job.id, self.worker, record)
        self.committed = True
        return status  # type: ignore[return-value]

    def within_lease(self, record: Record) -> None:
        """Run ``record(session)`` in a transaction that checks the lease, without ending the job."""
        self.check_cancelled()
        commit_under_lease(self.queue, self.job.id, self.worker, record, finish=False)


@runtime_checkable
class JobHandler(Protocol):
    """One job type: ``plan`` (server), ``run`` (the VM's host), ``record`` (server, through ``commit``)."""

    def plan(self, job: Claimed) -> Any: ...

    def run(self, plan: Any, ctx: JobContext) -> Any: ...

    def record(self, commit: Commit, job: Claimed, plan: Any, outcome: Any) -> None: ...

    def failed(self, job: Claimed, cancelled: bool) -> None:
        """The job failed or was stopped (after ``plan`` or ``run`` raised): undo what it marked."""


def perform(handler: JobHandler | Callable[[JobContext], None], ctx: JobContext) -> None:
    """Plan, run and record one job in this process."""
    if not isinstance(handler, JobHandler):
        handler(ctx)
        return
    try:
        plan = handler.plan(ctx.job)
        outcome = handler.run(plan, ctx)
        handler.record(ctx.commit, ctx.job, plan, outcome)
    except HavenError:
        handler.failed(ctx.job, ctx.cancel.is_set() and not ctx.lease_lost.is_set())
        raise


Handler = JobHandler | Callable[[JobContext], None]


class JobRunner:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        workers: int = 2,
        name: str = "server",
        poll_interval: float = 0.5,
        host_id: str | None = None,
        on_failure: Callable[[str], None] | None = None,
    ):
        self.queue, self.handlers, self.workers = queue, handlers, workers
        self.name, self.poll, self.host_id = name, poll_interval, host_id
        self.on_failure = on_failure
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, args=(f"{self.name}-{i}-{uuid.uuid4().hex[:6]}",), daemon=True)
            t.start()
            self._threads.append(t)
        reaper = threading.Thread(target=self._reap_loop, daemon=True)
        reaper.start()
        self._threads.append(reaper)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.wakeup.notify()
        for t in self._threads:
            t.join(timeout)

    def run_once(self, worker: str | None = None) -> str | None:
        """Claim and run one job on the calling thread; returns its id (for tests and the CLI)."""
        job = self.queue.claim(worker or f"{self.name}-inline", self._types(), self.host_id)
        if job is None:
            return None
        self._run(job, worker or f"{self.name}-inline")
        return job.id

    def _types(self) -> tuple[str, ...]:
        return tuple(str(t) for t in self.handlers)

    def _loop(self, worker: str) -> None:
        while not self._stop.is_set():
            seen = self.queue.wakeup.generation
            try:
                job = self.queue.claim(worker, self._types(), self.host_id)
            except Exception:  # database briefly unavailable: try again
                log.exception("claim failed")
                job = None
            if job is None:  # until this process enqueues or ends a job; the poll finds the others' jobs
                self.queue.wakeup.wait(seen, self.poll)
                continue
            self._run(job, worker)

    def _reap_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.queue.lease.total_seconds() / 4)):
            try:
                for job_id in self.queue.reap_expired():
                    self._report_failure(job_id)
            except Exception:
                log.exception("reaper failed")

    def _report_failure(self, job_id: str) -> None:
        if self.on_failure is None:
            return
        try:
            self.on_failure(job_id)
        except Exception:  # an alert that cannot be raised must not stop the runner
            log.exception("failure hook for job %s failed", job_id)

    def _run(self, job: Claimed, worker: str) -> None:
        ctx = JobContext(self.queue, job, worker)
        beat = threading.Thread(target=self._heartbeat, args=(ctx,), daemon=True)
        beat.start()
        try:
            perform(self.handlers[job.type], ctx)
            if not ctx.committed:
                ctx.commit()
        except JobCancelled as e:
            self._flush_quietly(ctx)
            self.queue.fail(job.id, worker, e, cancelled=True)
        except LeaseLost:
            log.warning("job %s: lease lost, nothing recorded", job.id)
        except HavenError as e:
            self._flush_quietly(ctx)
            if ctx.cancel.is_set() and not ctx.lease_lost.is_set():  # the work stopped because a user asked
                self.queue.fail(job.id, worker, JobCancelled(), cancelled=True)
                return
            self.queue.fail(job.id, worker, e)
            self._report_failure(job.id)
        except Exception as e:  # a lost database, or a bug: fail the job (the trace in the log), never leave it running
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            self._flush_quietly(ctx)
            self.queue.fail(job.id, worker, database_error(e) or InternalError(f"{type(e).__name__}: {e}"))
            self._report_failure(job.id)
        finally:
            ctx.committed = True  # stops the heartbeat loop
            beat.join(5)

    @staticmethod
    def _flush_quietly(ctx: JobContext) -> None:
        """The job's last progress, before its end is written (best effort: the end matters more)."""
        try:
            ctx.flush()
        except Exception:
            log.exception("job %s: last progress not written", ctx.job.id)

    def _heartbeat(self, ctx: JobContext) -> None:
        """Renew the lease every third of its length; look for a stop request four times a second."""
        renew_every = max(0.2, self.queue.lease.total_seconds() / 3)
        last_renewal = time.monotonic()
        while not ctx.committed:
            if time.monotonic() - last_renewal >= renew_every:
                if not self.queue.heartbeat(ctx.job.id, ctx.worker):
                    if not ctx.committed:
                        ctx.lease_lost.set()
                    return
                last_renewal = time.monotonic()
            if not ctx.cancel.is_set() and self.queue.cancel_requested(ctx.job.id):
                ctx.cancel.set()
            try:
                ctx.flush_due()
            except Exception:  # the next round writes it
                log.exception("job %s: progress not written", ctx.job.id)
            time.sleep(0.25)

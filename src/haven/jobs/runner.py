"""Runs queued jobs on worker threads: claim, heartbeat, cancel, and record the outcome.

A handler gets a ``JobContext``. It does its work, checking ``ctx.check_cancelled()`` between
steps, and records what the job produced with ``ctx.commit(fn)``: ``fn(session)`` runs in the
same transaction that marks the job finished, and only while the worker still holds the job's
lease. A worker that lost its lease therefore records nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from haven.domain.enums import JobStatus
from haven.db.session import database_error
from haven.errors import HavenError, InternalError
from haven.jobs.queue import Claimed, JobQueue, LeaseLost

__all__ = ["WorkContext", "JobContext", "JobRunner", "JobCancelled", "Handler"]

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
    def __init__(self, queue: JobQueue, job: Claimed, worker: str):
        super().__init__(job.id)
        self.queue, self.job, self.worker = queue, job, worker
        self.committed = False

    def _publish(self, subtasks: list[dict], changed: bool) -> None:
        self.queue.update_progress(self.job.id, self.worker, subtasks)

    def warn(self, message: str) -> None:
        self.queue.add_warning(self.job.id, message)

    def commit(self, record: Callable[[Any], dict | None] | None = None) -> JobStatus:
        """Record the job's outcome atomically with its completion, if we still hold the lease."""
        self.check_cancelled()
        with self.queue.db.session() as s:
            if not self.queue.holds_lease(s, self.job.id, self.worker):
                raise LeaseLost(job_id=self.job.id)
            result = record(s) if record else None
            status = self.queue.finish(s, self.job.id, self.worker, result or {})
        self.committed = True
        return status


Handler = Callable[[JobContext], None]


class JobRunner:
    def __init__(
        self,
        queue: JobQueue,
        handlers: dict[str, Handler],
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
        for t in self._threads:
            t.join(timeout)

    def run_once(self, worker: str | None = None) -> str | None:
        """Claim and run one job on the calling thread; returns its id (for tests and the CLI)."""
        job = self.queue.claim(worker or f"{self.name}-inline", tuple(self.handlers), self.host_id)
        if job is None:
            return None
        self._run(job, worker or f"{self.name}-inline")
        return job.id

    def _loop(self, worker: str) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(worker, tuple(self.handlers), self.host_id)
            except Exception:  # database briefly unavailable: try again
                log.exception("claim failed")
                job = None
            if job is None:
                self._stop.wait(self.poll)
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
            self.handlers[job.type](ctx)
            if not ctx.committed:
                ctx.commit()
        except JobCancelled as e:
            self.queue.fail(job.id, worker, e, cancelled=True)
        except LeaseLost:
            log.warning("job %s: lease lost, nothing recorded", job.id)
        except HavenError as e:
            if ctx.cancel.is_set() and not ctx.lease_lost.is_set():  # the work stopped because a user asked
                self.queue.fail(job.id, worker, JobCancelled(), cancelled=True)
                return
            self.queue.fail(job.id, worker, e)
            self._report_failure(job.id)
        except Exception as e:  # a lost database, or a bug: fail the job (the trace in the log), never leave it running
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            self.queue.fail(job.id, worker, database_error(e) or InternalError(f"{type(e).__name__}: {e}"))
            self._report_failure(job.id)
        finally:
            ctx.committed = True  # stops the heartbeat loop
            beat.join(5)

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
            time.sleep(0.25)

"""The durable job queue: exclusive claims, heartbeats, leases that expire, cancel — on both databases."""

import threading
from datetime import timedelta

import pytest

from haven.domain.enums import JobStatus
from haven.jobs.queue import JobNotCancellable, LeaseLost
from haven.jobs.runner import JobRunner


def _enqueue(core, n=1, **kw):
    ids = []
    with core.db.session() as s:
        for _ in range(n):
            ids.append(core.queue.enqueue(s, type="Test", operation="Test", **kw).id)
    return ids


def test_each_job_is_claimed_by_exactly_one_of_many_workers(core):
    ids = _enqueue(core, 30)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name):
        while True:
            job = core.queue.claim(name)
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


def test_heartbeat_keeps_a_lease_and_an_expired_lease_is_requeued_then_failed(core, clock):
    (job_id,) = _enqueue(core, max_attempts=2)
    job = core.queue.claim("w1")
    assert job.id == job_id and job.attempt == 1
    clock.advance(timedelta(seconds=3))
    assert core.queue.heartbeat(job_id, "w1")  # renewed: 5 s from now
    clock.advance(timedelta(seconds=4))
    assert core.queue.reap_expired() == []  # still within the renewed lease
    clock.advance(timedelta(seconds=2))  # the worker died: no heartbeat
    assert core.queue.reap_expired() == [job_id]
    assert core.queue.get(job_id).status == JobStatus.QUEUED.value  # one attempt left
    assert not core.queue.heartbeat(job_id, "w1")  # the old worker lost it
    again = core.queue.claim("w2")
    assert again.id == job_id and again.attempt == 2
    clock.advance(timedelta(seconds=6))
    core.queue.reap_expired()
    failed = core.queue.get(job_id)
    assert failed.status == JobStatus.FAILED.value and failed.error_code == "JobLeaseExpired"
    assert failed.error_recommendation


def test_a_worker_that_lost_its_lease_records_nothing(core, clock):
    (job_id,) = _enqueue(core)
    core.queue.claim("w1")
    clock.advance(timedelta(seconds=6))
    recorded = []
    with pytest.raises(LeaseLost):
        with core.db.session() as s:
            if not core.queue.holds_lease(s, job_id, "w1"):
                raise LeaseLost(job_id=job_id)
            recorded.append(1)
    with pytest.raises(LeaseLost):
        with core.db.session() as s:
            core.queue.finish(s, job_id, "w1", {})
    assert recorded == []


def test_cancel_queued_job_at_once_and_finished_job_refused(core):
    a, b = _enqueue(core, 2)
    assert core.queue.request_cancel(a).status == JobStatus.CANCELLED.value
    job = core.queue.claim("w1")
    assert job.id == b  # the cancelled one is never claimed
    with core.db.session() as s:
        core.queue.finish(s, b, "w1", {"ok": True})
    with pytest.raises(JobNotCancellable):
        core.queue.request_cancel(b)


def test_runner_runs_handlers_and_stops_running_jobs_cleanly(core):
    started, release = threading.Event(), threading.Event()
    recorded = []

    def slow(ctx):
        started.set()
        while not release.wait(0.05):
            ctx.check_cancelled()
        ctx.commit(lambda s: recorded.append(ctx.job.id))

    runner = JobRunner(core.queue, {"Test": slow}, workers=1, poll_interval=0.05)
    runner.queue.lease = timedelta(seconds=1)
    (job_id,) = _enqueue(core)
    runner.start()
    try:
        assert started.wait(10)
        core.queue.request_cancel(job_id)
        final = core.queue.wait_until_finished(job_id, 20)
    finally:
        release.set()
        runner.stop()
    assert final.status == JobStatus.CANCELLED.value and final.error_code == "UserCancelled"
    assert recorded == []


def test_runner_fails_a_crashing_handler_with_an_internal_error(core):
    def crash(ctx):
        raise ZeroDivisionError("boom")

    runner = JobRunner(core.queue, {"Test": crash})
    (job_id,) = _enqueue(core)
    assert runner.run_once() == job_id
    job = core.queue.get(job_id)
    assert job.status == JobStatus.FAILED.value and job.error_code == "InternalError" and "boom" in job.error_message


def test_backups_wait_while_their_host_or_vault_is_at_its_limit(core):
    from haven.db.models import Host

    with core.db.session() as s:
        s.add(Host(id="h1", name="h1", region="local", adapter_url="folder:///x", created_at=core.clock.now()))
    core.queue.limits = {"host_id": 2, "vault_id": 4}
    ids = _enqueue(core, 3, host_id="h1")
    with core.db.session() as s:
        from haven.db.models import Job

        for job_id in ids:
            s.get(Job, job_id).type = "Backup"
    first, second = core.queue.claim("w1"), core.queue.claim("w2")
    assert {first.id, second.id} <= set(ids)
    assert core.queue.claim("w3") is None  # the host runs two backups already
    with core.db.session() as s:
        core.queue.finish(s, first.id, "w1", {})
    third = core.queue.claim("w3")
    assert third is not None and third.id not in (first.id, second.id)

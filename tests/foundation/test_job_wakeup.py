"""An idle job runner starts a job enqueued in its process at once, instead of at its next database poll
(issue 19: every served backup and restore waited up to half a second before it began)."""

from __future__ import annotations

import threading
import time

from haven.domain.enums import JobStatus
from haven.jobs.runner import JobRunner
from tests.foundation.helpers import make_folder_vm, register_local_host


def test_backup_now_through_the_api_starts_without_waiting_for_the_runners_poll(api, core, home):
    api.post("/api/v1/subscriptions", json={"name": "prod"}).raise_for_status()
    api.post("/api/v1/subscriptions/prod/vaults", json={"name": "v1", "region": "local"}).raise_for_status()
    make_folder_vm(home / "vms", "web1")
    host = register_local_host(core, home / "vms")
    api.post("/api/v1/subscriptions/prod/vaults/v1/items", json={"vm": "web1"}).raise_for_status()

    claims, idle = [], threading.Event()
    claim = core.queue.claim

    def counted(*args, **kwargs):
        job = claim(*args, **kwargs)
        claims.append(job)
        if len(claims) >= 2 and all(c is None for c in claims):
            idle.set()  # both workers looked, found nothing, and now wait
        return job

    core.queue.claim = counted
    # a poll interval no test outlives: only the wake-up can start the job
    runner = JobRunner(core.queue, core.job_handlers(), workers=2, host_id=host, poll_interval=3600)
    runner.start()
    try:
        assert idle.wait(30)
        time.sleep(0.2)  # both are inside their wait now
        job = api.post("/api/v1/subscriptions/prod/vaults/v1/items/web1/backup", json={}).json()
        end = time.monotonic() + 60
        while not JobStatus(core.queue.get(job["id"]).status).finished and time.monotonic() < end:
            time.sleep(0.05)
        shown = api.get(f"/api/v1/subscriptions/prod/jobs/{job['id']}").json()
        assert shown["status"] in ("Completed", "CompletedWithWarnings"), shown  # a stopped VM: crash-consistent
        assert api.get("/api/v1/subscriptions/prod/vaults/v1/items/web1/recovery-points").json()
    finally:
        runner.stop()


def _queued_job(api, core) -> str:
    sub = api.post("/api/v1/subscriptions", json={"name": "prod"}).json()
    with core.db.session() as s:
        return core.queue.enqueue(s, type="Test", operation="Test", subscription_id=sub["id"]).id


def test_a_long_poll_answers_when_the_job_ends(api, core):
    job_id = _queued_job(api, core)

    def finish_soon():
        time.sleep(0.5)
        assert JobRunner(core.queue, {"Test": lambda ctx: ctx.commit(lambda s: {"done": True})}).run_once() == job_id

    worker = threading.Thread(target=finish_soon)
    worker.start()
    try:
        # asked while the job is queued, answered with its end: not with the state it found
        answer = api.get(f"/api/v1/subscriptions/prod/jobs/{job_id}", params={"wait": 30})
    finally:
        worker.join()
    assert answer.status_code == 200 and answer.json()["status"] == "Completed", answer.json()
    assert answer.json()["result"] == {"done": True}


def test_a_long_poll_on_an_ended_job_answers_at_once_and_a_bad_wait_is_refused(api, core):
    job_id = _queued_job(api, core)
    assert api.get(f"/api/v1/subscriptions/prod/jobs/{job_id}", params={"wait": 0.2}).json()["status"] == "Queued"
    for bad in ("31", "-1", "soon"):
        answer = api.get(f"/api/v1/subscriptions/prod/jobs/{job_id}", params={"wait": bad})
        assert answer.status_code == 422 and answer.json()["error"]["code"], answer.text
    core.queue.request_cancel(job_id)
    assert api.get(f"/api/v1/subscriptions/prod/jobs/{job_id}", params={"wait": 30}).json()["status"] == "Cancelled"

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

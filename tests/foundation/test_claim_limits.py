"""Concurrency limits hold under a storm of claims (issue 23, finding 7): workers claiming at the same instant never
run more backups on a host or in a vault than allowed. The count and the claim serialize per host and per vault."""

from __future__ import annotations

import threading

import time

from sqlalchemy import event, func, select

from haven.db.models import Job
from haven.domain.enums import JobStatus
from tests.foundation.helpers import make_folder_vm, register_local_host

ROUNDS, WORKERS, JOBS = 8, 8, 12


def _running(core, column, key) -> int:
    with core.db.session() as s:
        return s.scalar(select(func.count()).select_from(Job).where(
            Job.type == "Backup", Job.status == JobStatus.IN_PROGRESS.value, getattr(Job, column) == key))


def _slow_counts(conn, cursor, statement, *args):
    """A loaded database: some time passes between a claim's count of running backups and its update."""
    if statement.lstrip().upper().startswith("SELECT COUNT("):
        time.sleep(0.02)


def test_claims_from_many_threads_never_exceed_the_host_and_vault_limits(core, home):
    event.listen(core.db.engine, "after_cursor_execute", _slow_counts)
    owner = core.auth.authenticate(core.auth.bootstrap_local_owner(home / "credentials.json", "x"))
    core.subscriptions.create(owner, "prod")
    vault_id = core.vaults.create(owner, "prod", "v1", "local")["id"]
    make_folder_vm(home / "vms", "vm0", size=1 << 20)
    hosts = [register_local_host(core, home / "vms", name=f"h{i}") for i in range(2)]
    core.queue.limits = {"host_id": 2, "vault_id": 3}
    worst = {"host": 0, "vault": 0}
    for _ in range(ROUNDS):
        with core.db.session() as s:
            for i in range(JOBS):
                core.queue.enqueue(s, type="Backup", operation="Backup", host_id=hosts[i % 2], vault_id=vault_id)
        start, claimed, lock = threading.Barrier(WORKERS), [], threading.Lock()

        def worker(name, host):
            start.wait()
            while (job := core.queue.claim(name, host_id=host)) is not None:
                with lock:
                    claimed.append((job.id, name))

        threads = [threading.Thread(target=worker, args=(f"w{i}", hosts[i % 2])) for i in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        worst["host"] = max(worst["host"], *(_running(core, "host_id", h) for h in hosts))
        worst["vault"] = max(worst["vault"], _running(core, "vault_id", vault_id))
        assert claimed, "no worker claimed anything"
        for job_id, name in claimed:  # the round's backups end; the next round starts from none running
            with core.db.session() as s:
                core.queue.finish(s, job_id, name, {})
        with core.db.session() as s:  # what is left queued will not be claimed by the next round first
            left = s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED.value)).all()
        for job_id in left:
            core.queue.request_cancel(job_id)
    assert worst == {"host": 2, "vault": 3}, worst

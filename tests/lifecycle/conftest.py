"""A protected image-folder VM and helpers to back it up synchronously with the real engine."""

from __future__ import annotations

import pytest

from haven.jobs.runner import JobRunner
from tests.foundation.helpers import make_folder_vm, register_local_host


class World:
    def __init__(self, core, home):
        self.core, self.home = core, home
        self.token = core.auth.bootstrap_local_owner(home / "credentials.json", "x")
        self.owner = core.auth.authenticate(self.token)
        self.runner = JobRunner(core.queue, core.job_handlers(), on_failure=core.alerts.job_failed)

    def setup(self, vm: str = "web1", policy: str | None = None) -> None:
        self.core.subscriptions.create(self.owner, "prod")
        self.core.vaults.create(self.owner, "prod", "v1", "local")
        self.vm_folder = make_folder_vm(self.home / "vms", vm)
        register_local_host(self.core, self.home / "vms")
        self.core.protection.enable(self.owner, "prod", "v1", vm, policy)

    def backup(self, vm: str = "web1", **kw) -> dict:
        job = self.core.protection.backup_now(self.owner, "prod", "v1", vm, **kw)
        return self.run(job["id"])

    def scheduled_backup(self) -> dict:
        """Run the policy's backup that is due now, as the scheduler starts it (a scheduled point)."""
        from haven.jobs.scheduler import Scheduler

        jobs = Scheduler(self.core).enqueue_due_backups()
        assert len(jobs) == 1, jobs
        return self.run(jobs[0])

    def run(self, job_id: str) -> dict:
        while True:
            ran = self.runner.run_once()
            assert ran is not None, "no job to run"
            if ran == job_id:
                return self.core.jobs.show(self.owner, "prod", job_id)

    def points(self, vm: str = "web1") -> list[dict]:
        return self.core.points.list(self.owner, "prod", "v1", vm)

    def stored_points(self) -> set[str]:
        from haven.db.models import Vault

        with self.core.db.session() as s:
            vault = s.query(Vault).one()
        repo = self.core.storage.open(vault)
        return {p.point_id for item in repo.list_items() for p in repo.list_points(item)}


@pytest.fixture
def world(core, home) -> World:
    return World(core, home)

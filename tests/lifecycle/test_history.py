"""Job and alert history: kept for job_history_days / alert_history_days, then pruned by the scheduler."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from haven.config import SettingNotPositive, load_settings
from haven.jobs.scheduler import Scheduler
from tests.services._util import require_binary

#: the pruning is plain SQL on the jobs and alerts tables: both stores
JOBS = "/api/v1/subscriptions/prod/vaults/v1/jobs?limit=1000"


def test_old_finished_jobs_and_alerts_are_pruned_and_what_is_still_needed_is_kept(world, core, clock):
    require_binary("qemu-nbd")
    from haven.api.app import create_app

    world.setup()
    owner = world.owner
    (configured,) = [j["id"] for j in core.jobs.list(owner, "prod", "v1")]  # enabling protection: finished, unneeded
    # a backup whose point is kept a year: its job stays as long as the point
    made_point = world.backup(retain_until=clock.now() + timedelta(days=365))
    (point,) = world.points()
    # a backup stopped while queued: finished, nothing refers to it
    stopped = core.protection.backup_now(owner, "prod", "v1", "web1")
    core.jobs.stop(owner, "prod", stopped["id"])
    assert core.jobs.show(owner, "prod", stopped["id"])["status"] == "Cancelled"
    # a mount: its job is finished but the file-recovery session it opened is named by the job's id
    mount = core.restore.mount(owner, "prod", "v1", "web1", point["id"], hours=1)
    assert world.run(mount["id"])["status"] in ("Completed", "CompletedWithWarnings")
    try:
        # a backup that runs (a worker holds it) and a job still queued
        running = core.protection.backup_now(owner, "prod", "v1", "web1")
        assert core.queue.claim("worker-x") is not None
        assert core.jobs.show(owner, "prod", running["id"])["status"] == "InProgress"
        queued = core.restore.mount(owner, "prod", "v1", "web1", point["id"], hours=1)
        # an alert: no good backup for three days
        clock.advance(timedelta(days=3))
        assert core.alerts.check_overdue_items()
        (old_alert,) = [a["id"] for a in core.alerts.list(owner, "prod", "v1")]

        clock.advance(timedelta(days=core.settings.job_history_days, hours=1))
        recent = core.restore.mount(owner, "prod", "v1", "web1", point["id"], hours=1)
        core.jobs.stop(owner, "prod", recent["id"])
        assert core.alerts.check_overdue_items()  # today's alert

        scheduler = Scheduler(core)
        assert scheduler.tick()["pruned"] == {"jobs": 2, "alerts": 1}
        with TestClient(create_app(core), raise_server_exceptions=False) as api:
            api.headers["Authorization"] = f"Bearer {world.token}"
            response = api.get(JOBS)
            assert response.status_code == 200, response.text
            listed = {j["id"] for j in response.json()}
            assert api.get(f"/api/v1/subscriptions/prod/jobs/{stopped['id']}").status_code == 404
        assert not {stopped["id"], configured} & listed
        assert {made_point["id"], mount["id"], running["id"], queued["id"], recent["id"]} <= listed
        alerts = core.alerts.list(owner, "prod", "v1")
        assert alerts and old_alert not in {a["id"] for a in alerts}
        assert world.points()[0]["id"] == point["id"]

        # at most once an hour
        assert scheduler.prune_history() is None
        clock.advance(timedelta(minutes=61))
        assert scheduler.prune_history() == {"jobs": 0, "alerts": 0}
    finally:
        core.restore.unmount(owner, "prod", "v1", "web1", point["id"])


def test_history_periods_come_from_haven_toml_or_the_environment_and_must_be_positive(tmp_path, monkeypatch):
    assert load_settings(tmp_path).job_history_days == 90 and load_settings(tmp_path).alert_history_days == 90
    (tmp_path / "haven.toml").write_text("job_history_days = 14\nalert_history_days = 30\n")
    assert (load_settings(tmp_path).job_history_days, load_settings(tmp_path).alert_history_days) == (14, 30)
    monkeypatch.setenv("HAVEN_JOB_HISTORY_DAYS", "7")
    assert load_settings(tmp_path).job_history_days == 7
    monkeypatch.setenv("HAVEN_JOB_HISTORY_DAYS", "0")
    with pytest.raises(SettingNotPositive) as e:
        load_settings(tmp_path)
    assert "HAVEN_JOB_HISTORY_DAYS" in e.value.fix

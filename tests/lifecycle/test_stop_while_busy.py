"""Stopping protection while a job of the item is in flight (issue 16, finding 6).

Stop protection is refused, typed, while a backup of the item is queued or running (with "delete
backup data", while any job of the item is); and, independently, a backup records its point only if
the item is still protected in the transaction that records it."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.jobs.runner import JobRunner

ITEMS = "/api/v1/subscriptions/prod/vaults/v1/items"


@pytest.fixture
def api(world, core):
    with TestClient(create_app(core), raise_server_exceptions=False, headers={"Authorization": f"Bearer {world.token}"}) as client:
        yield client


@contextmanager
def backup_held_at_commit(core):
    """A runner whose backups stop just before recording their point (the data is stored by then) until released."""
    handlers = core.job_handlers()
    backup = handlers["Backup"]
    record = backup.record
    at_commit, release = threading.Event(), threading.Event()

    def held(*args, **kwargs):
        at_commit.set()
        assert release.wait(60), "the test never released the backup"
        return record(*args, **kwargs)

    backup.record = held
    runner = JobRunner(core.queue, handlers, workers=1, poll_interval=0.05)
    runner.start()
    try:
        yield at_commit, release
    finally:
        release.set()
        runner.stop()


def _disable(api, delete: bool):
    return api.post(f"{ITEMS}/web1/disable", json={"delete_backup_data": delete})


def test_stop_protection_is_refused_while_a_backup_is_queued_or_running(world, core, api):
    world.setup()
    job = api.post(f"{ITEMS}/web1/backup", json={}).json()
    assert job["status"] == "Queued"
    for delete in (True, False):  # queued
        r = _disable(api, delete)
        assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorStopProtectionJobInProgress", r.text
        assert job["id"] in r.json()["error"]["recommendation"]
    with backup_held_at_commit(core) as (at_commit, release):
        assert at_commit.wait(60)
        assert api.get(f"/api/v1/subscriptions/prod/jobs/{job['id']}").json()["status"] == "InProgress"
        for delete in (True, False):  # running, its data already in the vault
            r = _disable(api, delete)
            assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorStopProtectionJobInProgress", r.text
        assert api.get(f"{ITEMS}/web1").json()["protection_state"] == "Protected"
        release.set()
        final = core.queue.wait_until_finished(job["id"], 60)
    assert final.status in ("Completed", "CompletedWithWarnings"), (final.error_code, final.error_message)
    assert [p["state"] for p in api.get(f"{ITEMS}/web1/recovery-points").json()] == ["Available"]
    # once nothing runs, stopping with delete is accepted
    r = _disable(api, True)
    assert r.status_code == 200 and r.json()["protection_state"] == "SoftDeleted", r.text


def test_delete_data_is_refused_while_a_restore_of_the_item_is_queued(world, core, api, tmp_path):
    world.setup()
    point = world.backup()["result"]["recovery_point_id"]
    r = api.post(f"{ITEMS}/web1/recovery-points/{point}/restore-disks", json={"target": str(tmp_path / "out")})
    assert r.status_code == 202, r.text
    refused = _disable(api, True)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "UserErrorStopProtectionJobInProgress"
    # a restore does not record a point: stopping protection and keeping the data is fine meanwhile
    assert _disable(api, False).json()["protection_state"] == "ProtectionStopped"


def test_a_backup_whose_item_lost_protection_before_commit_records_nothing(world, core, api, monkeypatch):
    """The refusal above is checked in the stop's own transaction; a stop that races past it (on
    PostgreSQL READ COMMITTED, a backup enqueued and claimed while the stop commits) must still never
    leave a point on a soft-deleted item: the backup checks the item where it records the point."""
    from haven.services.protection import ProtectionService

    world.setup()
    monkeypatch.setattr(ProtectionService, "_refuse_while_busy", staticmethod(lambda *a, **k: None), raising=False)
    job = api.post(f"{ITEMS}/web1/backup", json={}).json()
    with backup_held_at_commit(core) as (at_commit, release):
        assert at_commit.wait(60)
        assert world.stored_points(), "the backup's manifest is in the vault before it commits"
        r = _disable(api, True)
        assert r.status_code == 200 and r.json()["protection_state"] == "SoftDeleted", r.text
        release.set()
        final = core.queue.wait_until_finished(job["id"], 60)
    assert final.status == "Failed" and final.error_code == "UserErrorItemNoLongerProtected", (final.status, final.error_code)
    shown = api.get(f"/api/v1/subscriptions/prod/jobs/{job['id']}").json()
    assert shown["error"]["code"] == "UserErrorItemNoLongerProtected" and "undelete" in shown["error"]["recommendation"]
    assert api.get(f"{ITEMS}/web1/recovery-points").json() == []
    assert world.stored_points() == set()  # the manifest was withdrawn too
    item = api.get(f"{ITEMS}/web1").json()
    assert item["protection_state"] == "SoftDeleted" and item["latest_recovery_point"] is None

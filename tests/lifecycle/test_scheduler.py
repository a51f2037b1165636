"""The scheduler: each slot once, at most one missed slot made up after a restart, alerts for the rest."""

import threading
from datetime import datetime, timedelta, timezone

from haven.jobs.scheduler import Scheduler


def test_a_slot_runs_once_and_a_restart_makes_up_only_the_newest_missed_slot(world, core, clock):
    world.setup()  # DefaultPolicy: daily 22:30 UTC; clock at 2026-11-02 09:00 UTC
    scheduler = Scheduler(core)
    assert scheduler.enqueue_due_backups() == []
    clock.set(datetime(2026, 11, 2, 22, 31, tzinfo=timezone.utc))
    first = scheduler.enqueue_due_backups()
    assert len(first) == 1 and scheduler.enqueue_due_backups() == []  # the same slot never twice
    assert world.run(first[0])["status"] in ("Completed", "CompletedWithWarnings")
    # the server is down for three days; a new scheduler (a restart) makes up one slot only
    clock.set(datetime(2026, 11, 5, 23, 0, tzinfo=timezone.utc))
    restarted = Scheduler(core)
    made_up = restarted.enqueue_due_backups()
    assert len(made_up) == 1 and restarted.enqueue_due_backups() == []
    job = core.jobs.show(world.owner, "prod", made_up[0])
    with core.db.session() as s:
        from haven.db.models import Job

        assert s.get(Job, made_up[0]).params["slot"] == "2026-11-05T22:30:00+00:00"
    alerts = core.alerts.list(world.owner, "prod", "v1")
    assert [a["kind"] for a in alerts] == ["BackupWindowMissed"] and "2 scheduled backup(s)" in alerts[0]["message"]
    assert job["status"] == "Queued"


def test_two_schedulers_on_one_database_enqueue_a_slot_once(world, core, clock):
    world.setup()
    clock.set(datetime(2026, 11, 2, 22, 45, tzinfo=timezone.utc))
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def tick():
        barrier.wait()
        results.append(Scheduler(core).enqueue_due_backups())

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]


def test_policy_time_zone_is_honoured_across_daylight_saving(world, core, clock):
    world.setup()
    core.policies.create(world.owner, "prod", "v1", "berlin",
                         {"frequency": "daily", "times": ["02:30"], "timezone": "Europe/Berlin"}, {"daily_days": 7})
    core.protection.set_policy(world.owner, "prod", "v1", "web1", "berlin")
    # 2027-03-28: Berlin springs forward at 02:00 -> 03:00; 02:30 does not exist and runs at 03:00 CEST (01:00 UTC)
    clock.set(datetime(2027, 3, 28, 0, 59, tzinfo=timezone.utc))
    with core.db.session() as s:
        from haven.db.models import ProtectedItem

        s.query(ProtectedItem).update({"last_slot": datetime(2027, 3, 27, 1, 30, tzinfo=timezone.utc)})
    assert Scheduler(core).enqueue_due_backups() == []
    clock.advance(timedelta(minutes=2))
    assert len(Scheduler(core).enqueue_due_backups()) == 1


def test_the_tick_does_not_collect_garbage_every_tick(world, core, clock, monkeypatch):
    world.setup()
    runs: list[str] = []
    real = core.lifecycle.collect_garbage
    monkeypatch.setattr(core.lifecycle, "collect_garbage", lambda vault_id: runs.append(vault_id) or real(vault_id))
    scheduler = Scheduler(core)
    for _ in range(3):  # three ticks, 30 s apart: one GC (the vault never had one)
        scheduler.tick()
        clock.advance(timedelta(seconds=30))
    assert len(runs) == 1
    clock.advance(timedelta(hours=core.settings.gc_interval_hours))
    (scheduled,) = scheduler.tick()["enqueued"]  # the day's slot passed too
    scheduler.tick()
    assert len(runs) == 2  # its daily run
    # a backup fails and leaves chunks behind: GC is due again gc_delay_minutes later, not before
    from haven.engine import Repository
    from haven.engine.errors import StorageRequestRejected

    def failing(self, *args, **kw):
        raise StorageRequestRejected(location="test", detail="disk full")

    monkeypatch.setattr(Repository, "backup", failing)
    assert world.run(scheduled)["status"] == "Failed"  # permanent: not retried
    scheduler.tick()
    assert len(runs) == 2
    clock.advance(timedelta(minutes=core.settings.gc_delay_minutes))
    scheduler.tick()
    assert len(runs) == 3
    scheduler.tick()
    assert len(runs) == 3


def _vault(core):
    from haven.db.models import Vault

    with core.db.session() as s:
        return s.query(Vault).one()


def _item(core):
    from haven.db.models import ProtectedItem

    with core.db.session() as s:
        return s.query(ProtectedItem).one().id


def test_a_transiently_failed_scheduled_backup_is_retried_within_its_window(world, core, clock, monkeypatch, tmp_path):
    from haven.engine import Repository
    from haven.engine.errors import StorageUnavailable

    world.setup()
    clock.set(datetime(2026, 11, 2, 22, 31, tzinfo=timezone.utc))
    (job_id,) = Scheduler(core).enqueue_due_backups()
    real, calls = Repository.backup, []

    def flaky(self, *args, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailable(location="test", detail="connection reset")
        return real(self, *args, **kw)

    monkeypatch.setattr(Repository, "backup", flaky)
    assert world.runner.run_once() == job_id
    job = core.jobs.show(world.owner, "prod", job_id)
    assert job["status"] == "Queued"  # not Failed: it is tried again...
    assert world.runner.run_once() is None  # ...after a backoff
    assert [a for a in core.alerts.list(world.owner, "prod", "v1") if a["severity"] == "Critical"] == []
    clock.advance(timedelta(minutes=1))
    assert world.runner.run_once() == job_id
    job = core.jobs.show(world.owner, "prod", job_id)
    assert job["status"] == "CompletedWithWarnings" and any("Attempt 1 of 3 failed" in w for w in job["warnings"])
    (point,) = world.points()
    target = tmp_path / "restored"
    target.mkdir()
    repo = core.storage.open(_vault(core))
    repo.restore_disk(_item(core), point["id"], "vda", target / "vda.raw")
    assert (target / "vda.raw").read_bytes() == (world.vm_folder / "vda.raw").read_bytes()

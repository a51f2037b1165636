"""Retention looks only at items with something due (``services/retention_due.py``): a tick with nothing due
reads no recovery point, and what makes an item due (an expiry reached, a new point, a policy change) is
applied on the next tick."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from haven.jobs.scheduler import Scheduler


class PointReads:
    """The statements that touch the recovery_points table while it is open."""

    def __init__(self, engine):
        self.engine, self.seen = engine, []

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, *args):
        if "recovery_points" in statement:
            self.seen.append(statement)


def _days_of_points(world, core, clock, days: int = 9):
    world.setup()
    core.policies.create(world.owner, "prod", "v1", "week", {"frequency": "daily", "times": ["22:30"]}, {"daily_days": 8})
    core.protection.set_policy(world.owner, "prod", "v1", "web1", "week")
    clock.advance(timedelta(hours=13, minutes=31))  # 22:31 UTC: the first daily slot is due
    for day in range(days):
        if day:
            clock.advance(timedelta(days=1))
        assert world.scheduled_backup()["status"] in ("Completed", "CompletedWithWarnings")


def test_a_tick_with_nothing_due_reads_no_recovery_point(world, core, clock):
    _days_of_points(world, core, clock)
    scheduler = Scheduler(core)
    scheduler.tick()  # the new points made the item due: retention looks once
    assert len(world.points()) == 8
    clock.advance(timedelta(minutes=1))
    with PointReads(core.db.engine) as reads:
        done = scheduler.tick()
    assert done["expired"] == [] and reads.seen == [], reads.seen


def test_an_expiry_reached_a_new_point_and_a_policy_change_are_applied_on_the_next_tick(world, core, clock):
    _days_of_points(world, core, clock)
    scheduler = Scheduler(core)
    scheduler.tick()
    oldest = min(world.points(), key=lambda p: p["time"])
    clock.set(oldest["expires_at"] + timedelta(seconds=1))
    assert scheduler.tick()["expired"] == [oldest["id"]]

    assert len(world.points()) == 7 and core.lifecycle.items_due_for_retention() == []

    clock.advance(timedelta(hours=23))  # the next daily slot: the backup applies retention to its item itself
    world.scheduled_backup()
    assert len(world.points()) == 8 and core.lifecycle.items_due_for_retention() == []

    core.policies.update(world.owner, "prod", "v1", "week", None, {"daily_days": 7})
    scheduler.tick()
    assert len(world.points()) == 7

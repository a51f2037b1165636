"""A long garbage collection never delays a due backup: ``haven serve``'s scheduler runs GC on a thread of its own."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from haven.db.models import Job
from haven.jobs.scheduler import Scheduler


def test_a_slow_gc_does_not_delay_a_due_backup(world, core, clock, monkeypatch):
    world.setup()  # DefaultPolicy: daily at 22:30 UTC; the vault never had a GC, so one is due at once
    clock.set(datetime(2026, 11, 2, 22, 0, tzinfo=timezone.utc))
    in_gc, release = threading.Event(), threading.Event()

    def slow_gc(vault_id):
        in_gc.set()
        release.wait(30)
        raise AssertionError("the test released GC")  # GC stays due; its outcome is not what this test is about

    monkeypatch.setattr(core.lifecycle, "collect_garbage", slow_gc)
    scheduler = Scheduler(core, interval=0.05)
    scheduler.start()
    try:
        assert in_gc.wait(10), "GC did not start"
        clock.set(datetime(2026, 11, 2, 22, 31, tzinfo=timezone.utc))  # the slot is due while GC runs
        end, jobs = time.monotonic() + 10, []
        while not jobs and time.monotonic() < end:
            with core.db.session() as s:
                jobs = s.scalars(select(Job.id).where(Job.type == "Backup")).all()
            time.sleep(0.05)
        assert len(jobs) == 1 and not release.is_set(), "the due backup waited for GC"
    finally:
        release.set()
        scheduler.stop()

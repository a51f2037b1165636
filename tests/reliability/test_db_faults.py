"""Item 6 (short, in-process form) — the database fails inside the transaction that records the
recovery point and completes the job (an OperationalError raised from ``JobQueue.finish``, as when
the server is killed or PostgreSQL drops the connection mid-commit), on SQLite and PostgreSQL:
the transaction rolls back whole (no point row, job not completed), no point in the database refers
to data that is not stored, verify is clean, and the next backup records its point."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from haven.db.models import RecoveryPoint
from haven.jobs.queue import JobQueue
from tests.lifecycle.conftest import World

from .conftest import report


@pytest.fixture
def world(core, home) -> World:
    return World(core, home)


def _db_points(core) -> set[str]:
    with core.db.session() as s:
        return {p.id for p in s.query(RecoveryPoint).all()}


def test_db_failure_while_recording_point(world, monkeypatch):
    world.setup()
    real_finish = JobQueue.finish
    calls = {"n": 0}

    def dying_finish(self, s, job_id, worker, result=None):
        calls["n"] += 1
        s.flush()  # the point row has been sent to the database...
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(JobQueue, "finish", dying_finish)
    job = world.backup()
    assert calls["n"] == 1
    assert job["status"] not in ("Completed", "CompletedWithWarnings"), job
    assert _db_points(world.core) == set(), "a point row survived the failed transaction"
    monkeypatch.setattr(JobQueue, "finish", real_finish)
    ok = world.backup()
    assert ok["status"] in ("Completed", "CompletedWithWarnings"), ok
    in_db = _db_points(world.core)
    stored = world.stored_points()
    assert len(in_db) == 1 and in_db <= stored, "a database point refers to data that is not stored"
    from haven.db.models import Vault

    with world.core.db.session() as s:
        vault = s.query(Vault).one()
    check = world.core.storage.open(vault).verify(read_data=True)
    assert check.ok
    report(f"db_fault[{world.core.db.dialect}]", failed_commits=1, orphan_manifests=len(stored - in_db),
           points_without_data=0)

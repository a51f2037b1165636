"""A job's progress reaches the database at most about once a second, and its last value always."""

from __future__ import annotations

import time

from haven.jobs.runner import JobRunner


def test_progress_writes_are_throttled_and_the_last_value_is_kept(core, monkeypatch):
    writes: list[tuple[float, list]] = []
    update = core.queue.update_progress

    def counted(job_id, worker, subtasks):
        writes.append((time.monotonic(), subtasks))
        update(job_id, worker, subtasks)

    monkeypatch.setattr(core.queue, "update_progress", counted)
    total = 20_000

    def copy(ctx):  # a step reporting progress as often as the engine does, for about 1.5 s
        ctx.subtask("Copy", percent=0)
        progress = ctx.progress_for("Copy")
        end = time.monotonic() + 1.5
        done = 0
        while done < total - 1:
            done = min(total - 1, int((1 - (end - time.monotonic()) / 1.5) * total))
            progress.update(done, total)
        progress.update(total - 1, total)  # the last value, right after the one before
        ctx.commit(lambda s: {"copied": total})

    with core.db.session() as s:
        job_id = core.queue.enqueue(s, type="Test", operation="Test").id
    assert JobRunner(core.queue, {"Test": copy}).run_once() == job_id

    # a status change is written at once; every other write waits for a second since the one before
    assert 2 <= len(writes) <= 4, [w[1] for w in writes]
    gaps = [b[0] - a[0] for a, b in zip(writes[1:], writes[2:])]
    assert all(gap >= 0.9 for gap in gaps[:-1]), gaps
    job = core.queue.get(job_id)
    assert job.subtasks == [{"name": "Copy", "status": "InProgress", "percent": 100.0, "done": total - 1, "total": total}]

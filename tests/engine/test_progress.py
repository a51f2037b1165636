"""Progress reporters may be slow (the job runner writes each update to the database): the engine
reports at most ten times a second, so a slow reporter does not hold up a backup, restore or
verify, and the last update still says 100%."""

from __future__ import annotations

import threading
import time

import pytest

from haven.engine import Repository
from haven.progress import PROGRESS_INTERVAL, Throttled

from .sources import random_disk

KiB = 1 << 10
SIZE = 4 << 20
CHUNK = 64 * KiB  # 64 chunks


class SlowReporter:
    """Takes 30 ms per update, like a database write on a busy disk; counts its calls."""

    def __init__(self):
        self.calls: list[tuple[int, int | None, str | None]] = []
        self._lock = threading.Lock()

    def update(self, done, total=None, phase=None):
        time.sleep(0.03)
        with self._lock:
            self.calls.append((done, total, phase))


def allowed(seconds: float) -> int:
    """What the engine's throttle lets through in ``seconds``: one per interval, plus phase changes and the end."""
    return int(seconds / PROGRESS_INTERVAL) + 4


@pytest.fixture
def small_repo(local_backend, kek) -> Repository:
    return Repository.init(local_backend, kek, {"name": "v"}, chunk_size=CHUNK)


def test_backup_reports_progress_throttled(small_repo):
    disk = random_disk("vda", SIZE, 1, fill=1.0, chunk=CHUNK)
    slow = SlowReporter()
    t0 = time.monotonic()
    small_repo.backup("vm", "p1", [disk], {}, progress=slow)
    elapsed = time.monotonic() - t0
    assert len(slow.calls) <= allowed(elapsed), f"{len(slow.calls)} updates in {elapsed:.2f} s"
    assert slow.calls[-1][:2] == (SIZE, SIZE)


def test_restore_reports_progress_throttled(small_repo, tmp_path):
    disk = random_disk("vda", SIZE, 2, fill=1.0, chunk=CHUNK)
    small_repo.backup("vm", "p1", [disk], {})
    slow = SlowReporter()
    t0 = time.monotonic()
    small_repo.restore_disk("vm", "p1", "vda", tmp_path / "out.img", progress=slow)
    elapsed = time.monotonic() - t0
    assert (tmp_path / "out.img").read_bytes() == disk.image()
    assert len(slow.calls) <= allowed(elapsed), f"{len(slow.calls)} updates in {elapsed:.2f} s"
    assert slow.calls[-1][:2] == (SIZE, SIZE)


def test_verify_reports_progress_throttled(small_repo):
    small_repo.backup("vm", "p1", [random_disk("vda", SIZE, 3, fill=1.0, chunk=CHUNK)], {})
    slow = SlowReporter()
    t0 = time.monotonic()
    report = small_repo.verify(read_data=True, progress=slow)
    elapsed = time.monotonic() - t0
    assert report.chunks_read == report.chunks_stored > 0 and not report.corrupt
    assert len(slow.calls) <= allowed(elapsed), f"{len(slow.calls)} updates in {elapsed:.2f} s"
    assert slow.calls[-1][:2] == (1, 1)


def test_throttled_lets_the_end_and_phase_changes_through():
    now = [0.0]
    seen = []

    class P:
        def update(self, done, total=None, phase=None):
            seen.append((done, total, phase))

    t = Throttled(P(), interval=1.0, clock=lambda: now[0])
    for i in range(10):
        t.update(i, 10, "a")
    t.update(0, 5, "b")
    t.update(5, 5, "b")
    assert seen == [(0, 10, "a"), (0, 5, "b"), (5, 5, "b")]

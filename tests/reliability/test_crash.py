"""Item 1 — crash anywhere: ``kill -9`` of a backup (and of GC) at seeded random points.

A child process runs the real engine on a local vault and SIGKILLs itself at the n-th event
(backend call or disk read; before it, after it, or half-way through writing an object), n drawn
uniformly over the whole operation: reading, uploading, the chunk confirmation listing, the
manifest commit, the lock release. After each kill:

- ``verify(read_data=True)`` is clean;
- the interrupted point is absent (or, if the kill came after the commit, complete and restorable);
- the next backup completes and uploads exactly the chunks that were not stored yet
  (``summary.chunks_new == |needed - stored before|``): it re-sends at most the unfinished part.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from haven.clock import FakeClock
from haven.engine import LocalBackend, RawFileSource, Repository
from haven.engine.codec import ZERO_ID
from haven.engine.locks import live_locks

from .conftest import FULL, KEK, MiB, make_image, report, size

CHILD = Path(__file__).with_name("_crash_child.py")
WHENS = ("before", "after", "torn")


def _child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=1800)


def _needed_ids(repo: Repository, image: Path) -> set[bytes]:
    cs = repo.chunk_size
    out = set()
    with open(image, "rb") as fh:
        while True:
            data = fh.read(cs)
            if not data:
                break
            if data.count(0) != len(data):
                out.add(repo.codec.chunk_id(data))
    out.discard(ZERO_ID)
    return out


def _restore_equals(repo: Repository, item: str, point: str, image: Path, tmp: Path) -> bool:
    out = tmp / f"restored-{point}.img"
    repo.restore_disk(item, point, "vda", out)
    try:
        with open(out, "rb") as a, open(image, "rb") as b:
            while True:
                x, y = a.read(8 * MiB), b.read(8 * MiB)
                if x != y:
                    return False
                if not x:
                    return True
    finally:
        out.unlink()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("crash-image")
    return make_image(tmp / "disk.raw", size("crash_image"), seed=11, fill=0.25 if FULL else 0.6)


def test_kill_backup_anywhere(tmp_path, image):
    rng = random.Random(20261122)
    cs = size("crash_chunk")
    # a dry run counts the events of a complete backup
    dry = tmp_path / "dry"
    Repository.init(LocalBackend(dry), KEK, {"name": "dry"}, chunk_size=cs)
    done = _child("backup", str(dry), str(image), "vm", "p0", "0", "none")
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    figures = {"killed": 0, "not_reached": 0, "absent": 0, "committed": 0, "resent_chunks": 0, "needed_chunks": 0, "data_lost": 0}
    points = size("crash_points")
    # always cover the last events (manifest commit, lock release) as well as the random ones
    draws = sorted({*(rng.randint(1, events) for _ in range(points - 3)), events - 2, events - 1, events})
    for i, kill_at in enumerate(draws):
        when = WHENS[i % len(WHENS)]
        vault = tmp_path / f"vault-{i}"
        Repository.init(LocalBackend(vault), KEK, {"name": f"crash-{i}"}, chunk_size=cs)
        proc = _child("backup", str(vault), str(image), "vm", "interrupted", str(kill_at), when)
        # a run may make a few events fewer than the dry run (time-driven lock refreshes): it then completes
        assert proc.returncode in (-9, 0), f"kill point {kill_at} ({when}): rc={proc.returncode} {proc.stderr[-2000:]}"
        figures["killed" if proc.returncode == -9 else "not_reached"] += 1
        repo = Repository.open(LocalBackend(vault), KEK)
        check = repo.verify(read_data=True)
        assert check.ok, f"kill at event {kill_at}/{events} ({when}): verify found {check.as_dict()}"
        if repo.point_exists("vm", "interrupted"):
            # the kill came after the commit: the point must then be whole
            figures["committed"] += 1
            assert _restore_equals(repo, "vm", "interrupted", image, tmp_path)
        else:
            figures["absent"] += 1
        needed = _needed_ids(repo, image)
        before = repo.stored_chunk_ids()
        with RawFileSource(image, name="vda") as src:
            summary = repo.backup("vm", "next", [src], {})
        unfinished = needed - before
        assert summary.chunks_new == len(unfinished), (kill_at, when, summary.chunks_new, len(unfinished))
        figures["resent_chunks"] += summary.chunks_new
        figures["needed_chunks"] += len(needed)
        after = repo.verify(read_data=True)
        assert after.ok and _restore_equals(repo, "vm", "next", image, tmp_path)
        shutil.rmtree(vault)  # 200 vaults of a 2 GiB image would not fit on the disk
    report("crash_backup", image_bytes=image.stat().st_size, events_per_backup=events, **figures)
    assert figures["killed"] >= 0.9 * len(draws), figures


def test_kill_gc_anywhere(tmp_path, image):
    rng = random.Random(4612)
    cs = size("crash_chunk")
    other = make_image(tmp_path / "other.raw", 8 * MiB, seed=99, fill=0.8)

    def prepared(vault: Path) -> Repository:
        repo = Repository.init(LocalBackend(vault), KEK, {"name": "gc"}, chunk_size=cs)
        with RawFileSource(other, name="vda") as a:
            repo.backup("old", "p1", [a], {})
        with RawFileSource(image, name="vda") as b:
            repo.backup("vm", "keep", [b], {})
        repo.delete_point("old", "p1")  # its chunks are now garbage
        return repo

    dry = tmp_path / "dry"
    prepared(dry)
    done = _child("gc", str(dry), "-", "-", "-", "0", "none")
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    tries = max(3, size("crash_points") // 3)
    killed = 0
    for i in range(tries):
        kill_at, when = rng.randint(1, events), WHENS[i % len(WHENS)]
        vault = tmp_path / f"gc-{i}"
        prepared(vault)
        proc = _child("gc", str(vault), "-", "-", "-", str(kill_at), when)
        assert proc.returncode in (-9, 0), proc.stderr[-2000:]  # 0: this run made fewer events than the dry run
        killed += proc.returncode == -9
        repo = Repository.open(LocalBackend(vault), KEK)
        check = repo.verify(read_data=True)
        assert check.ok and check.points_checked == 1, check.as_dict()
        assert _restore_equals(repo, "vm", "keep", image, tmp_path)
        # the dead GC's lock never fails a backup: left in phase "mark" it is ignored; left in "sweep"
        # it holds a backup's commit step until it expires (a clock 31 minutes on), then the backup commits
        later = Repository.open(LocalBackend(vault), KEK, clock=FakeClock(repo.clock.now() + timedelta(minutes=31)))
        sweeping = any(x.sweeping for x in live_locks(repo.backend, repo.clock))
        with RawFileSource(image, name="vda") as src:
            (later if sweeping else repo).backup("vm", "next", [src], {})
        later.gc(grace=timedelta(0))
        final = later.verify(read_data=True)
        assert final.ok and final.chunks_stored == final.chunks_referenced
        shutil.rmtree(vault)
    report("crash_gc", events_per_gc=events, tries=tries, killed=killed, not_reached=tries - killed, data_lost=0)
    assert killed >= 0.9 * tries

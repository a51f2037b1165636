"""Item 4 — concurrency: backup, verify and GC together (GC with grace 0: only the locks protect
live data), each on its own ``Repository`` whose clock is skewed by up to ±10 minutes; and a
backup job paused past its lease, which must never record its point."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest

from haven.clock import SystemClock
from haven.engine import LocalBackend, Repository
from haven.engine.errors import RepositoryLocked
from haven.errors import HavenError
from tests.engine.sources import random_disk
from tests.lifecycle.conftest import World

from .conftest import KEK, MiB, report, size

CS = 64 << 10


class SkewedClock:
    def __init__(self, skew: timedelta):
        self.skew, self._inner = skew, SystemClock()

    def now(self):
        return self._inner.now() + self.skew

    def __getattr__(self, name):
        return getattr(self._inner, name)


class ListingSafeBackend(LocalBackend):
    """LocalBackend with the listing race fixed (see test_local_listing_survives_concurrent_delete):
    an object deleted between readdir and stat is skipped. Used so that the concurrency test checks
    the lock/GC protocol rather than tripping over that (separately reported) bug."""

    def _walk(self, folder, rel, prefix, out):
        import os

        from haven.engine.backend import ObjectInfo
        from haven.engine.local import _TMP_SUFFIX

        try:
            it = os.scandir(folder)
        except FileNotFoundError:
            return
        with it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if name.startswith(prefix) or prefix.startswith(name + "/"):
                            self._walk(entry.path, name, prefix, out)
                    elif _TMP_SUFFIX not in entry.name and name.startswith(prefix):
                        out.append(ObjectInfo(name, entry.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:
                    continue


def test_local_listing_survives_concurrent_delete(tmp_path, monkeypatch):
    import os

    import haven.engine.local as local

    backend = LocalBackend(tmp_path / "v", fsync=False)
    backend.prepare()
    for i in range(3):
        backend.store(f"locks/l{i}", b"{}")
    real = os.scandir

    def racing_scandir(path):
        entries = list(real(path))
        for e in entries:  # another process deletes an object right after our readdir
            if e.name == "l1":
                os.unlink(e.path)

        class It(list):
            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

        return It(entries)

    monkeypatch.setattr(local.os, "scandir", racing_scandir)
    names = [o.name for o in backend.list("locks/")]
    assert sorted(names) == ["locks/l0", "locks/l2"]


def test_backup_verify_gc_together_with_clock_skew(tmp_path):
    vault = tmp_path / "vault"
    Repository.init(ListingSafeBackend(vault, fsync=False), KEK, {"name": "conc"}, chunk_size=CS)
    rng = random.Random(3126)
    srcs = {f"vm{i}": random_disk("vda", 2 * MiB, seed=i, fill=0.8, chunk=CS) for i in range(2)}
    latest: dict[str, str] = {}
    figures = {"rounds": 0, "backups": 0, "gcs": 0, "verifies": 0, "locked": 0, "chunks_deleted": 0, "live_deleted": 0}

    def repo(skew_min: int) -> Repository:
        return Repository.open(ListingSafeBackend(vault, fsync=False), KEK, clock=SkewedClock(timedelta(minutes=skew_min)))

    for rnd in range(size("concurrency_rounds")):
        figures["rounds"] += 1
        errors: list[BaseException] = []
        outcomes: dict[str, object] = {}

        def run(name, fn):
            try:
                outcomes[name] = fn()
            except RepositoryLocked:
                figures["locked"] += 1
            except BaseException as exc:  # noqa: BLE001 — reported below
                errors.append(exc)

        item = f"vm{rnd % 2}"
        new = srcs[item].with_changes({rng.randrange(srcs[item].size - CS): rng.randbytes(CS // 2)}, report_changed=False)
        point = f"p{rnd}"
        # garbage for GC: drop an old point of the other item
        other = f"vm{(rnd + 1) % 2}"
        old = sorted((p.point_id for p in repo(0).list_points(other) if p.point_id != latest.get(other)), key=lambda x: int(x[1:]))
        if old:
            repo(0).delete_point(other, old[0])
        threads = [
            threading.Thread(target=run, args=("backup", lambda: repo(rng.choice((-10, 10))).backup(item, point, [new], {}, parent_point_id=latest.get(item)))),
            threading.Thread(target=run, args=("gc", lambda: repo(rng.choice((-10, 10))).gc(grace=timedelta(0)))),
            threading.Thread(target=run, args=("verify", lambda: repo(rng.choice((-10, 10))).verify(read_data=True, quarantine=False))),
        ]
        for t in rng.sample(threads, 3):
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        if "backup" in outcomes:
            figures["backups"] += 1
            latest[item] = point
            srcs[item] = new
        if "gc" in outcomes:
            figures["gcs"] += 1
            figures["chunks_deleted"] += outcomes["gc"].chunks_deleted
        if "verify" in outcomes:
            figures["verifies"] += 1
            assert outcomes["verify"].ok, outcomes["verify"].as_dict()
        check = repo(0).verify(read_data=True, quarantine=False)
        assert check.ok and not check.missing, f"round {rnd}: live chunk deleted: {check.as_dict()}"
        for it, p in latest.items():
            assert repo(0).open_disk_reader(it, p, "vda").read(0, srcs[it].size) == srcs[it].image()
    report("concurrency", **figures)
    assert figures["backups"] > 0


@pytest.fixture
def world(core, home) -> World:
    return World(core, home)


def test_backup_paused_past_its_lease_records_nothing(world, clock, monkeypatch):
    world.setup()
    real_backup = Repository.backup
    paused = {"n": 0}

    def paused_backup(self, *args, **kw):
        summary = real_backup(self, *args, **kw)
        if paused["n"] == 0:
            paused["n"] += 1
            # the worker stalls (GC pause, suspended VM, partition) past its lease; skew the clock too
            clock.advance(world.core.queue.lease + timedelta(minutes=10))
            assert world.core.queue.reap_expired(), "the reaper did not take the job back"
        return summary

    monkeypatch.setattr(Repository, "backup", paused_backup)
    job = world.core.protection.backup_now(world.owner, "prod", "v1", "web1")
    ran = world.runner.run_once()
    assert ran == job["id"]
    # the stalled worker wrote its manifest, then lost the lease: nothing recorded, manifest withdrawn
    assert world.points() == []
    assert world.stored_points() == set()
    # the reaper requeued the job (or failed it if out of attempts); either way a later backup records
    # exactly one point, present in storage
    state = world.core.jobs.show(world.owner, "prod", job["id"])
    if state["status"] in ("Queued", "InProgress"):
        clock.advance(timedelta(hours=1))
        final = world.run(job["id"])
    else:
        assert state.get("error", {}) or state["status"] in ("Failed",), state
        final = world.backup()
    assert final["status"] in ("Completed", "CompletedWithWarnings"), final
    pts = world.points()
    assert len(pts) == 1 and world.stored_points() == {pts[0]["id"]}
    report("lease_lost", stalled_backups=1, points_recorded_by_stalled=0)

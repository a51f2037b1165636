"""Backups and GC run together on a folder vault, on real threads; hooks in a wrapping backend force
each interleaving. Neither fails the other, GC never deletes a chunk a backup needs, a failed
backup's chunks go at once, and a second GC reads only the manifests that are new."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from haven.clock import FakeClock
from haven.engine import Repository
from haven.engine.backend import WrappingBackend
from haven.engine.errors import StorageRequestRejected
from haven.engine.locks import Lock

from .faulty import Fault, FaultyBackend
from .sources import random_disk

MiB = 1 << 20


class Hook(WrappingBackend):
    """Pauses the ``nth`` call of ``op`` on a name starting with ``prefix`` until ``go`` is set;
    ``reached`` is set when it pauses. Counts loads per prefix."""

    def __init__(self, inner, op: str = "", prefix: str = "", nth: int = 1, when=None):
        super().__init__(inner)
        self.op, self.prefix, self.nth, self.when = op, prefix, nth, when
        self.reached, self.go = threading.Event(), threading.Event()
        self.seen = 0
        self.loads: list[str] = []
        self._mutex = threading.Lock()

    def _maybe_pause(self, op: str, name: str, data: bytes | None = None) -> None:
        if op != self.op or not name.startswith(self.prefix):
            return
        if self.when is not None and not self.when(data):
            return
        with self._mutex:
            self.seen += 1
            hit = self.seen == self.nth
        if hit:
            self.reached.set()
            assert self.go.wait(60), "the test never released the hook"

    def store(self, name, data):
        self._maybe_pause("store", name, data)
        super().store(name, data)

    def load(self, name):
        self.loads.append(name)
        self._maybe_pause("load", name)
        return super().load(name)

    def delete(self, name):
        self._maybe_pause("delete", name)
        super().delete(name)


@pytest.fixture
def clock():
    return FakeClock(datetime(2024, 5, 1, tzinfo=timezone.utc))


@pytest.fixture
def crepo(local_backend, kek, clock):
    return Repository.init(local_backend, kek, {"name": "v"}, clock=clock)


def _chunks(backend) -> set[str]:
    return {o.name for o in backend.list("chunks/")}


def _run(fn, out: dict, key: str) -> threading.Thread:
    def target():
        try:
            out[key] = fn()
        except BaseException as exc:  # noqa: BLE001 — asserted by the test
            out[key] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def _restores(repo, item, point, src, tmp_path) -> None:
    target = tmp_path / f"{item}-{point}.img"
    repo.restore_disk(item, point, "vda", target)
    assert target.read_bytes() == src.image()


def test_backup_started_while_gc_runs_succeeds(crepo, local_backend, kek, clock, tmp_path):
    keep, gone = random_disk("vda", 2 * MiB, seed=1, fill=1.0), random_disk("vda", 2 * MiB, seed=2, fill=1.0)
    crepo.backup("vm", "p0", [keep], {})
    crepo.backup("vm", "p1", [gone], {})
    crepo.delete_point("vm", "p1")
    hook = Hook(local_backend, "load", "points/")  # GC pauses while it reads the first manifest
    out: dict = {}
    gc = _run(lambda: Repository.open(hook, kek, clock=clock).gc(grace=timedelta(0), expected_points={("vm", "p0")}), out, "gc")
    assert hook.reached.wait(30)
    new = random_disk("vda", 2 * MiB, seed=3, fill=1.0)
    summary = Repository.open(local_backend, kek, clock=clock).backup("vm2", "p2", [new], {})  # while GC holds its lock
    assert summary.chunks_new > 0
    hook.go.set()
    gc.join(60)
    report = out["gc"]
    assert not isinstance(report, BaseException), report
    assert report.chunks_deleted == 2  # p1's two chunks; p0's and the new point's stay
    assert crepo.verify(read_data=True).ok
    _restores(crepo, "vm", "p0", keep, tmp_path)
    _restores(crepo, "vm2", "p2", new, tmp_path)


def test_gc_started_while_a_backup_runs_neither_blocks_it_nor_deletes_its_chunks(crepo, local_backend, kek, clock, tmp_path):
    old = random_disk("vda", 2 * MiB, seed=4, fill=1.0)
    crepo.backup("vm", "old", [old], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)  # the cache learns when "old"'s chunks existed
    old_chunks = _chunks(local_backend)
    clock.advance(timedelta(hours=1))
    crepo.delete_point("vm", "old")
    hook = Hook(local_backend, "store", "chunks/", nth=3)  # the backup pauses storing its third chunk
    new = random_disk("vda", 4 * MiB, seed=5, fill=1.0)
    out: dict = {}
    backup = _run(lambda: Repository.open(hook, kek, clock=clock).backup("vm", "new", [new], {}), out, "backup")
    assert hook.reached.wait(30)
    time.sleep(0.2)  # let the upload threads store what they can
    stored_by_backup = _chunks(local_backend) - old_chunks
    assert stored_by_backup
    report = Repository.open(local_backend, kek, clock=clock).gc(grace=timedelta(0), expected_points=set(), cache=cache)
    assert report.writers == 1
    assert report.chunks_deleted == len(old_chunks)  # the deleted point's chunks go at once...
    assert stored_by_backup <= _chunks(local_backend)  # ...the running backup's stay
    hook.go.set()
    backup.join(60)
    assert not isinstance(out["backup"], BaseException), out["backup"]
    assert out["backup"].chunks_repaired == 0
    assert crepo.verify(read_data=True).ok
    _restores(crepo, "vm", "new", new, tmp_path)


def test_a_chunk_swept_under_a_running_backup_is_stored_again_before_it_commits(crepo, local_backend, kek, clock, tmp_path):
    disk = random_disk("vda", 2 * MiB, seed=6, fill=1.0)
    crepo.backup("vm", "a", [disk], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)
    clock.advance(timedelta(hours=1))
    crepo.delete_point("vm", "a")
    # the backup finds a's chunks stored and reuses them; it pauses as it enters its commit step
    hook = Hook(local_backend, "store", "locks/", when=lambda data: json.loads(data)["phase"] == "commit")
    out: dict = {}
    backup = _run(lambda: Repository.open(hook, kek, clock=clock).backup("vm", "b", [disk], {}), out, "backup")
    assert hook.reached.wait(30)
    report = crepo.gc(grace=timedelta(0), expected_points=set(), cache=cache)
    assert report.chunks_deleted == 2 and not _chunks(local_backend)  # a's chunks were garbage when GC looked
    hook.go.set()
    backup.join(60)
    assert not isinstance(out["backup"], BaseException), out["backup"]
    assert out["backup"].chunks_repaired == 2  # the commit step found them missing and stored them again
    assert crepo.verify(read_data=True).ok
    _restores(crepo, "vm", "b", disk, tmp_path)


def test_a_sweep_waits_for_a_committing_backup(crepo, local_backend, kek, clock, tmp_path):
    disk = random_disk("vda", 2 * MiB, seed=7, fill=1.0)
    crepo.backup("vm", "a", [disk], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)
    clock.advance(timedelta(hours=1))
    crepo.delete_point("vm", "a")
    hook = Hook(local_backend, "store", "points/")  # the backup pauses writing its manifest (inside its commit)
    out: dict = {}
    backup = _run(lambda: Repository.open(hook, kek, clock=clock).backup("vm", "b", [disk], {}), out, "backup")
    assert hook.reached.wait(30)
    gc = _run(lambda: crepo.gc(grace=timedelta(0), expected_points=set(), cache=cache), out, "gc")
    time.sleep(1.0)
    assert len(_chunks(local_backend)) == 2  # GC decided a's chunks were garbage, but does not sweep now
    hook.go.set()
    backup.join(60)
    gc.join(60)
    assert not isinstance(out["backup"], BaseException), out["backup"]
    assert not isinstance(out["gc"], BaseException), out["gc"]
    assert out["gc"].chunks_deleted == 0  # its second look found b, which references them
    assert out["backup"].chunks_repaired == 0
    assert crepo.verify(read_data=True).ok
    _restores(crepo, "vm", "b", disk, tmp_path)


def test_a_failed_backups_chunks_are_reclaimed_at_once_while_another_backup_runs(crepo, local_backend, kek, clock, tmp_path):
    crepo.backup("vm0", "p0", [random_disk("vda", MiB, seed=8, fill=1.0)], {})
    before = _chunks(local_backend)
    failing = FaultyBackend(local_backend, [Fault("permanent", ops=("store",), prefix="chunks/", nth=4)])
    with pytest.raises(StorageRequestRejected):  # e.g. a full disk, mid-way
        Repository.open(failing, kek, clock=clock).backup("vm1", "p1", [random_disk("vda", 4 * MiB, seed=9, fill=1.0)], {})
    orphans = _chunks(local_backend) - before
    assert orphans
    hook = Hook(local_backend, "store", "chunks/", nth=2)
    out: dict = {}
    running = random_disk("vda", 4 * MiB, seed=10, fill=1.0)
    backup = _run(lambda: Repository.open(hook, kek, clock=clock).backup("vm2", "p2", [running], {}), out, "backup")
    assert hook.reached.wait(30)
    time.sleep(0.2)
    running_chunks = _chunks(local_backend) - before - orphans
    assert running_chunks
    report = crepo.gc(grace=timedelta(0), expected_points={("vm0", "p0")})
    assert report.chunks_deleted == len(orphans)
    assert not (orphans & _chunks(local_backend))  # the failed backup's chunks are gone at once
    assert running_chunks <= _chunks(local_backend)  # the running backup's are kept
    hook.go.set()
    backup.join(60)
    assert not isinstance(out["backup"], BaseException), out["backup"]
    assert crepo.verify(read_data=True).ok
    _restores(crepo, "vm2", "p2", running, tmp_path)


def test_gc_sweeps_nothing_next_to_a_backup_of_an_older_haven(crepo, local_backend, clock):
    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=11, fill=1.0)], {})
    crepo.delete_point("vm", "p1")
    old = {"kind": "backup", "holder": "old", "time": clock.now().isoformat(),
           "expires": (clock.now() + timedelta(minutes=30)).isoformat()}  # no phase: an exclusive-GC era writer
    local_backend.store("locks/0123", json.dumps(old).encode())
    report = crepo.gc(grace=timedelta(0), expected_points=set())
    assert report.chunks_deleted == 0 and len(_chunks(local_backend)) == 2
    local_backend.delete("locks/0123")
    assert crepo.gc(grace=timedelta(0), expected_points=set()).chunks_deleted == 2


def test_a_second_gc_reads_only_new_manifests(crepo, local_backend, kek, clock, tmp_path):
    counting = Hook(local_backend)
    repo = Repository.open(counting, kek, clock=clock)
    for n in range(3):
        repo.backup("vm", f"p{n}", [random_disk("vda", MiB, seed=20 + n, fill=1.0)], {})
    cache = repo.gc_cache(tmp_path / "cache")

    def gc_loads():
        counting.loads.clear()
        report = repo.gc(grace=timedelta(0), cache=cache)
        return report, sorted(n for n in counting.loads if n.startswith("points/"))

    first, loads = gc_loads()
    assert first.manifests_read == 3 and loads == ["points/vm/p0", "points/vm/p1", "points/vm/p2"]
    repo.backup("vm", "p3", [random_disk("vda", MiB, seed=23, fill=1.0)], {})
    second, loads = gc_loads()
    assert second.manifests_read == 1 and loads == ["points/vm/p3"]
    # a cache entry that does not verify is not trusted: the manifest is read again
    cache.close()
    with sqlite3.connect(tmp_path / "cache" / f"gc-{repo.config['vault_uuid']}.sqlite") as db:
        db.execute("UPDATE manifests SET chunks = zeroblob(32) WHERE name = 'points/vm/p1'")
    cache = repo.gc_cache(tmp_path / "cache")
    third, loads = gc_loads()
    assert third.manifests_read == 1 and loads == ["points/vm/p1"] and third.chunks_deleted == 0
    assert repo.verify(read_data=True).ok


def test_two_gcs_exclude_each_other(crepo, local_backend, clock):
    from haven.engine.errors import RepositoryLocked

    Lock(local_backend, clock, "gc").acquire(conflicts=("gc",))
    with pytest.raises(RepositoryLocked):
        crepo.gc(grace=timedelta(0), expected_points=set())


def test_gc_during_a_vaults_first_backup_deletes_nothing_and_does_not_fail(crepo, local_backend, kek, clock, tmp_path):
    """No point exists yet, the first backup has stored chunks: a GC run (no metadata store to vouch for
    the listing) neither refuses (a scheduled GC would fail on every new vault) nor deletes anything."""
    hook = Hook(local_backend, "store", "chunks/", nth=3)
    first = random_disk("vda", 4 * MiB, seed=7, fill=1.0)
    out: dict = {}
    backup = _run(lambda: Repository.open(hook, kek, clock=clock).backup("vm", "first", [first], {}), out, "backup")
    assert hook.reached.wait(30)
    time.sleep(0.2)
    stored = _chunks(local_backend)
    assert stored
    report = Repository.open(local_backend, kek, clock=clock).gc(grace=timedelta(0))
    assert report.points == 0 and report.writers == 1 and report.chunks_deleted == 0
    assert _chunks(local_backend) >= stored
    hook.go.set()
    backup.join(60)
    assert not isinstance(out["backup"], BaseException), out["backup"]
    _restores(crepo, "vm", "first", first, tmp_path)


def test_gc_still_refuses_a_listing_with_chunks_but_no_point_when_nobody_writes(crepo, local_backend, kek, clock):
    from haven.engine.errors import GcRefused

    crepo.backup("vm", "p", [random_disk("vda", 1 * MiB, seed=8, fill=1.0)], {})
    for obj in list(local_backend.list("points/")):  # a listing that lost every point
        local_backend.delete(obj.name)
    with pytest.raises(GcRefused):
        crepo.gc(grace=timedelta(0))

"""Garbage collection: delete chunks that no recovery point references, while backups run.

Backups write under shared locks and GC takes no lock that excludes them (``locks.py``); two GCs
exclude each other. A run:

1. **Read** (phase ``mark``): list ``chunks/``; list ``points/`` and take each manifest's chunk
   list (from the chunk-list cache, ``gccache.py``, for the very name, size and version listed; or
   by reading the manifest); then list the live locks. Any failure here stops the run before
   anything is deleted, and so does a listing that lacks a point the metadata store vouches for.
2. **Decide**: a chunk is a candidate if no listed manifest references it, it was seen
   unreferenced for at least ``grace``, and no live backup may have stored it: with no live
   backup lock every candidate goes; otherwise only chunks known to have existed before the
   oldest live backup started (minus ``clock_skew``: a first sighting in ``gc/pending``, or the
   chunk list of a point deleted since, cached when it was first read) and the ``orphans`` a
   failed backup left in its lock. A live lock of an older Haven, or an unreadable one, stops
   the sweep altogether.
3. **Sweep**, in rounds: write phase ``sweep``; list the locks; if a backup is in its commit
   step, write phase ``mark`` and wait; else list ``points/`` again and keep every chunk a
   manifest new (or written again) since step 1 references ("second look"), then delete.
   Between deletes GC looks at the locks every second and pauses the same way for a backup
   that wants to commit.

Why no committed recovery point ever loses a chunk. A backup's manifest M is written inside its
commit step, which begins by writing phase ``commit``, then waits until no GC lock is in phase
``sweep``, then lists ``chunks/`` and stores again (from the source) every chunk M needs that is
missing, then writes M. Take a chunk C that M references and a sweep round R of GC that deletes
C. R began by writing ``sweep`` (time s), listed the locks (l > s), listed the points (v > l)
and deleted C after v. Storage is strongly consistent, and each side writes its phase before it
lists the other's, so of the two writes the later one's listing sees the earlier one:
- if the backup wrote ``commit`` before l and was still committing at l, R saw it and deleted
  nothing; if it had finished by l, M was written before v, R's second look listed M and kept C;
- if the backup wrote ``commit`` after s, its wait saw R's ``sweep`` (or R had already ended):
  it listed ``chunks/`` only after R stopped deleting, found C missing and stored it again
  before writing M.
So every chunk of M is in storage when M is committed and stays there (a later round lists M).
A GC that crashes mid-sweep leaves its lock to expire; backups wait at most one lock lifetime.

The time rule and ``orphans`` only decide what is *worth* deleting: they keep GC from deleting
what running backups just stored (which they would then have to read and store again) and let a
failed backup's chunks go at once. Clock skew there costs work, never data. Chunks a running
backup reuses from an older point that is deleted meanwhile are safe by the argument above.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from haven.progress import NULL_PROGRESS, Progress

from .codec import DOMAIN_META
from .errors import GcRefused, StorageObjectNotFound
from .backend import ObjectInfo
from .format import CHUNKS, GC_PENDING, POINTS, chunk_id_from_name, chunk_name
from .gccache import ChunkListCache
from .locks import LOCKS, Lock, LockInfo

__all__ = ["GcReport", "run_gc", "DEFAULT_CLOCK_SKEW"]

#: How far apart the clocks of the server and of the hosts writing backups may be.
DEFAULT_CLOCK_SKEW = timedelta(minutes=15)
#: A sweep pauses at most this long in all for backups that commit, then leaves the rest for next time.
MAX_PAUSE = 600.0
LOCK_CHECK_SECONDS = 1.0


@dataclass
class GcReport:
    points: int = 0
    manifests_read: int = 0  # manifests loaded from storage (the rest came from the chunk-list cache)
    chunks_stored: int = 0
    chunks_referenced: int = 0
    chunks_unreferenced: int = 0
    chunks_deleted: int = 0
    bytes_deleted: int = 0
    chunks_pending: int = 0  # unreferenced but kept: inside the grace period, or maybe a running backup's
    chunks_deferred: int = 0  # due, but the sweep paused too long for committing backups
    writers: int = 0  # live backup locks seen
    locks_removed: int = 0
    dry_run: bool = False


def run_gc(repo, grace: timedelta = timedelta(hours=24), progress: Progress = NULL_PROGRESS, dry_run: bool = False,
           expected_points: set[tuple[str, str]] | None = None, cache: ChunkListCache | None = None,
           clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> GcReport:
    lock = Lock(repo.backend, repo.clock, "gc").acquire(conflicts=("gc",))
    try:
        return _Collector(repo, lock, cache or ChunkListCache(), grace, clock_skew, progress).run(dry_run, expected_points)
    finally:
        lock.release()


def _check_listing(points: list[tuple[str, str]], chunk_count: int, expected: set[tuple[str, str]] | None,
                   writing: bool) -> None:
    """Fail safe on a listing that may lie: a point the metadata store knows is missing, or no point
    at all while chunks exist and nobody vouched that the vault is empty. With a backup writing (a
    vault's first backup, say), chunks without a point are expected: the run then deletes nothing."""
    listed = set(points)
    if expected is not None:
        missing = expected - listed
        if missing:
            raise GcRefused(reason=f"the storage listing lacks {len(missing)} recovery point(s) the metadata store knows")
    elif not listed and chunk_count and not writing:
        raise GcRefused(reason=f"the storage lists no recovery point but {chunk_count} chunk(s)")


def _legacy(x: LockInfo) -> bool:
    return x.writer and (x.kind != "backup" or x.phase is None or x.started is None)


class _Collector:
    def __init__(self, repo, lock: Lock, cache: ChunkListCache, grace: timedelta, skew: timedelta, progress: Progress):
        self.repo, self.lock, self.cache, self.grace, self.skew, self.progress = repo, lock, cache, grace, skew, progress
        self.report = GcReport()
        self.known: dict[str, tuple[int, str | None]] = {}  # manifests whose chunks are marked: name -> size, version

    # ---- reading ----
    def _list_points(self) -> dict[str, ObjectInfo]:
        out = {}
        for obj in self.repo.backend.list(POINTS):
            if obj.name.count("/") == 2:
                out[obj.name] = obj
        return out

    def _chunks_of(self, obj: ObjectInfo) -> set[bytes]:
        name = obj.name
        ids = self.cache.get(name, obj.size, obj.version)
        if ids is None:
            _, item, point = name.split("/")
            ids = self.repo.load_point(item, point).stored_ids()
            self.report.manifests_read += 1
            self.cache.put(name, obj.size, obj.version, ids, self.repo.clock.now())
        self.known[name] = (obj.size, obj.version)
        return ids

    def run(self, dry_run: bool, expected: set[tuple[str, str]] | None) -> GcReport:
        report, repo = self.report, self.repo
        report.dry_run = dry_run
        now = repo.clock.now()
        # 1. read everything first; any exception here aborts before a single delete
        sizes: dict[bytes, int] = {}
        for obj in repo.backend.list(CHUNKS):
            cid = chunk_id_from_name(obj.name)
            if cid is not None:
                sizes[cid] = obj.size
        listed = self._list_points()
        referenced: set[bytes] = set()
        for n, (_, obj) in enumerate(sorted(listed.items())):
            self.progress.update(n, len(listed), "gc: reading recovery points")
            referenced |= self._chunks_of(obj)
            self.lock.refresh_if_due()
        self.cache.flush()
        locks = self.lock.others()
        writers = [x for x in locks if x.writer]
        _check_listing([tuple(n.split("/")[1:]) for n in listed], len(sizes), expected, bool(writers))
        gone = self.cache.names() - set(listed)
        existed: dict[bytes, datetime] = {}  # chunk -> a time by which it was surely stored
        for name in gone:
            entry = self.cache.entry(name)
            if entry is not None:
                for cid in entry[0]:
                    existed[cid] = min(existed.get(cid, entry[1]), entry[1])
        orphans: set[bytes] = set()
        for x in locks:
            if x.kind == "backup" and x.phase == "released":
                orphans |= x.orphans
        pending = _load_pending(repo)
        # 2. decide
        unreferenced = [cid for cid in sizes if cid not in referenced]
        first_seen = {cid: min(pending.get(cid, now), existed.get(cid, now)) for cid in unreferenced}
        due = [cid for cid in unreferenced if first_seen[cid] + self.grace <= now]
        if any(_legacy(x) for x in writers) or (not listed and expected is None):
            # a backup of an older Haven (or an unreadable lock) may be anywhere; or no point is listed and
            # nobody vouched for that (only a running backup let the listing pass): delete nothing
            doomed: list[bytes] = []
        elif writers:
            cutoff = min(x.started for x in writers) - self.skew
            doomed = [cid for cid in due if cid in orphans or first_seen[cid] < cutoff]
        else:
            doomed = due
        report.points, report.chunks_stored, report.chunks_referenced = len(listed), len(sizes), len(referenced & sizes.keys())
        report.chunks_unreferenced, report.chunks_pending, report.writers = len(unreferenced), len(unreferenced) - len(doomed), len(writers)
        if dry_run:
            report.chunks_deleted, report.bytes_deleted = len(doomed), sum(sizes[c] for c in doomed)
            return report
        # 3. act: remember what waits, then delete what is due
        doomed_set = set(doomed)
        _store_pending(repo, {c: t for c, t in first_seen.items() if c not in doomed_set})
        complete = self._sweep(doomed, sizes)
        if complete:
            self.cache.forget(gone)
            for x in locks:  # their orphans are dealt with
                if x.kind == "backup" and x.phase == "released":
                    repo.backend.delete(x.name)
        report.locks_removed = _remove_expired_locks(repo, now)
        self.progress.update(1, 1, "gc: done")
        return report

    # ---- sweeping ----
    def _enter_sweep(self, doomed: set[bytes], deadline: float) -> bool:
        """Phase ``sweep`` with no backup committing, and a second look at the points; False: gave up."""
        delay = 0.02
        while True:
            self.lock.set_phase("sweep")
            if not self._committing():
                break
            self.lock.set_phase("mark")
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(2.0, delay * 2)
        for name, obj in self._list_points().items():  # the second look
            if self.known.get(name) != (obj.size, obj.version):  # new, or written again since it was marked
                doomed -= self._chunks_of(obj)
        self.cache.flush()
        return True

    def _committing(self) -> bool:
        return any(x.writer and (x.phase != "write" or _legacy(x)) for x in self.lock.others())

    def _sweep(self, order: list[bytes], sizes: dict[bytes, int]) -> bool:
        if not order:
            return True
        doomed = set(order)
        deadline = time.monotonic() + MAX_PAUSE
        queue = list(reversed(order))
        try:
            while queue:
                if not self._enter_sweep(doomed, deadline):
                    self.report.chunks_deferred = sum(1 for c in queue if c in doomed)
                    return False
                checked = time.monotonic()
                while queue:
                    cid = queue.pop()
                    if cid not in doomed:
                        continue
                    self.progress.update(self.report.chunks_deleted, len(order), "gc: deleting chunks")
                    self.repo.backend.delete(chunk_name(cid))
                    self.report.chunks_deleted += 1
                    self.report.bytes_deleted += sizes[cid]
                    self.lock.refresh_if_due()
                    if queue and time.monotonic() - checked >= LOCK_CHECK_SECONDS:
                        checked = time.monotonic()
                        if self._committing():
                            self.lock.set_phase("mark")
                            break
            return True
        finally:
            if self.lock.phase != "mark":
                self.lock.set_phase("mark")


def _load_pending(repo) -> dict[bytes, datetime]:
    try:
        raw = repo.load_sealed(GC_PENDING, DOMAIN_META, GC_PENDING.encode())
    except StorageObjectNotFound:
        return {}
    return {bytes.fromhex(k): datetime.fromisoformat(v) for k, v in json.loads(raw).items()}


def _store_pending(repo, pending: dict[bytes, datetime]) -> None:
    doc = {cid.hex(): t.isoformat() for cid, t in pending.items()}
    repo.store_sealed(GC_PENDING, DOMAIN_META, GC_PENDING.encode(), json.dumps(doc).encode())


def _remove_expired_locks(repo, now: datetime) -> int:
    removed = 0
    for obj in repo.backend.list(LOCKS):
        try:
            doc = json.loads(repo.backend.load(obj.name))
            if datetime.fromisoformat(doc["expires"]) <= now:
                repo.backend.delete(obj.name)
                removed += 1
        except Exception:  # best effort: locks are advisory housekeeping here
            continue
    return removed

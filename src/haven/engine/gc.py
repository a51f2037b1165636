"""Garbage collection: delete chunks that no recovery point references.

Safety rules:
- GC takes an exclusive lock: it stops (``RepositoryLocked``) while any live backup lock exists,
  and backups refuse to start while it runs.
- Grace period: an unreferenced chunk is only deleted when it has been seen unreferenced by
  GC runs spanning at least ``grace`` (first sighting is kept, sealed, in ``gc/pending``). A
  backup that somehow ran without a visible lock has ``grace`` to commit its point.
- All-or-nothing reading: every listing and every manifest must be read successfully before
  anything is deleted. Any failure raises and nothing is deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from haven.progress import NULL_PROGRESS, Progress

from .codec import DOMAIN_META
from .errors import GcRefused, StorageObjectNotFound
from .format import CHUNKS, GC_PENDING, chunk_id_from_name, chunk_name
from .locks import LOCKS, Lock

__all__ = ["GcReport", "run_gc"]


@dataclass
class GcReport:
    points: int = 0
    chunks_stored: int = 0
    chunks_referenced: int = 0
    chunks_unreferenced: int = 0
    chunks_deleted: int = 0
    bytes_deleted: int = 0
    chunks_pending: int = 0  # unreferenced but still inside the grace period
    locks_removed: int = 0
    dry_run: bool = False


def run_gc(repo, grace: timedelta = timedelta(hours=24), progress: Progress = NULL_PROGRESS, dry_run: bool = False,
           expected_points: set[tuple[str, str]] | None = None) -> GcReport:
    lock = Lock(repo.backend, repo.clock, "gc").acquire(conflicts=("backup", "gc"))
    try:
        return _collect(repo, grace, progress, dry_run, lock, expected_points)
    finally:
        lock.release()


def _check_listing(points: list[tuple[str, str]], chunk_count: int, expected: set[tuple[str, str]] | None) -> None:
    """Fail safe on a listing that may lie: a point the metadata store knows is missing, or no point
    at all while chunks exist and nobody vouched that the vault is empty."""
    listed = set(points)
    if expected is not None:
        missing = expected - listed
        if missing:
            raise GcRefused(reason=f"the storage listing lacks {len(missing)} recovery point(s) the metadata store knows")
    elif not listed and chunk_count:
        raise GcRefused(reason=f"the storage lists no recovery point but {chunk_count} chunk(s)")


def _collect(repo, grace: timedelta, progress: Progress, dry_run: bool, lock: Lock,
             expected_points: set[tuple[str, str]] | None = None) -> GcReport:
    report = GcReport(dry_run=dry_run)
    # 1. read everything first; any exception here aborts before a single delete
    points = repo.point_ids()
    referenced: set[bytes] = set()
    for n, (item, point) in enumerate(points):
        progress.update(n, len(points), "gc: reading recovery points")
        referenced |= repo.load_point(item, point).stored_ids()
        lock.refresh_if_due()
    sizes: dict[bytes, int] = {}
    for obj in repo.backend.list(CHUNKS):
        cid = chunk_id_from_name(obj.name)
        if cid is not None:
            sizes[cid] = obj.size
    _check_listing(list(points), len(sizes), expected_points)
    pending = _load_pending(repo)
    now = repo.clock.now()
    # 2. decide
    unreferenced = [cid for cid in sizes if cid not in referenced]
    first_seen = {cid: pending.get(cid, now) for cid in unreferenced}
    doomed = [cid for cid in unreferenced if first_seen[cid] + grace <= now]
    report.points, report.chunks_stored, report.chunks_referenced = len(points), len(sizes), len(referenced & sizes.keys())
    report.chunks_unreferenced, report.chunks_pending = len(unreferenced), len(unreferenced) - len(doomed)
    if dry_run:
        report.chunks_deleted, report.bytes_deleted = len(doomed), sum(sizes[c] for c in doomed)
        return report
    # 3. act: remember what waits, then delete what is due
    doomed_set = set(doomed)
    _store_pending(repo, {c: t for c, t in first_seen.items() if c not in doomed_set})
    if doomed and set(repo.point_ids()) != set(points):  # a second look must agree before anything goes
        raise GcRefused(reason="the recovery points listed changed during collection")
    for n, cid in enumerate(doomed):
        progress.update(n, len(doomed), "gc: deleting chunks")
        repo.backend.delete(chunk_name(cid))
        report.chunks_deleted += 1
        report.bytes_deleted += sizes[cid]
        if n % 256 == 0:
            lock.refresh_if_due()
    report.locks_removed = _remove_expired_locks(repo, now)
    progress.update(1, 1, "gc: done")
    return report


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

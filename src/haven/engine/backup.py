"""The write path: disks in, a committed recovery point out.

The calling thread walks each disk chunk by chunk and reads only what it must (data extents,
and with a parent and a changed-block map only changed chunks). Chunks go to a bounded
pipeline (``pipeline.ChunkWriter``): worker threads hash, compress, encrypt and verify them,
upload threads store the new ones. The point's manifest is written only after a listing of the
vault confirms that every chunk it references is stored (lost writes, and chunks a concurrent GC
swept, are re-read from the source and stored again); then the manifest is read back. Any failure
or a cancel leaves no recovery point behind; the chunks it stored are handed to GC as orphans.

The backup's lock is shared (``locks.py``): it never waits for a GC to start. Only the short
commit step (confirm listing + manifest) excludes a GC's sweep: see ``gc.py`` for the argument.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from haven.progress import NULL_PROGRESS, PROGRESS_INTERVAL, Progress, Throttled

from .codec import ZERO_ID
from .errors import (
    BackupCancelled,
    ObjectCorrupt,
    RecoveryPointNotFound,
    StorageUploadNotConfirmed,
    UserError,
)
from .format import DiskManifest, PointManifest, check_id
from .locks import Lock
from .pipeline import ChunkWriter
from .planning import ChunkPlan, plan_chunks
from .reading import ReadAhead
from .source import DiskSource

__all__ = ["BackupSummary", "DiskSummary", "run_backup"]

CONFIRM_ROUNDS = 5


@dataclass
class DiskSummary:
    name: str
    size: int
    chunks: int = 0
    chunks_zero: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0  # taken from the parent point without reading
    bytes_read: int = 0


@dataclass
class BackupSummary:
    """What a backup did. ``bytes_new`` is what was stored (after compression and encryption)."""

    item_id: str
    point_id: str
    parent_point_id: str | None
    bytes_read: int = 0
    bytes_new: int = 0
    bytes_new_plain: int = 0
    chunks_total: int = 0
    chunks_new: int = 0
    chunks_zero: int = 0
    chunks_reused: int = 0
    chunks_repaired: int = 0
    seconds: float = 0.0
    disks: list[DiskSummary] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["disks"] = [dict(x.__dict__) for x in self.disks]
        return d


def run_backup(repo, item_id: str, point_id: str, disks: list[DiskSource], meta: dict[str, Any],
               parent_point_id: str | None = None, progress: Progress = NULL_PROGRESS,
               cancel: threading.Event | None = None) -> BackupSummary:
    started = time.monotonic()
    progress = Throttled(progress, PROGRESS_INTERVAL)  # the reporter may write to a database: the reading thread must not wait for it
    check_id(item_id, "Item id")
    check_id(point_id, "Recovery point id")
    names = [check_id(d.name, "Disk name") for d in disks]
    if len(set(names)) != len(names):
        raise UserError(f"Disk names must be unique within a point: {names}")
    lock = Lock(repo.backend, repo.clock, "backup").acquire()
    orphans: set[bytes] = set()
    try:
        summary = _run_locked(repo, item_id, point_id, disks, meta, parent_point_id, progress, cancel, lock, started, orphans)
    except BaseException:
        lock.abandon(orphans)
        raise
    lock.release()
    return summary


def _run_locked(repo, item_id, point_id, disks, meta, parent_point_id, progress, cancel, lock, started,
                orphans: set[bytes]) -> BackupSummary:
    from .errors import RecoveryPointExists

    if repo.point_exists(item_id, point_id):
        raise RecoveryPointExists(item_id=item_id, point_id=point_id)
    parent = repo.load_point(item_id, parent_point_id) if parent_point_id else None
    summary = BackupSummary(item_id, point_id, parent_point_id)
    writer = ChunkWriter(repo, repo.stored_chunk_ids(), cancel)
    total = sum(d.size for d in disks)
    try:
        manifests: list[DiskManifest] = []
        base = 0
        for src in disks:
            parent_disk = parent.disk(src.name) if parent else None
            manifests.append(_backup_disk(repo, writer, src, parent_disk, summary, progress, base, total, cancel, lock))
            base += src.size
        writer.drain()
        # commit step: announce it, then wait until no GC sweeps; from here to the manifest no
        # sweep starts, and the confirm listing below sees every chunk a sweep removed
        lock.set_phase("commit")
        lock.wait_while_sweeping()
        summary.chunks_repaired = _confirm_chunks(repo, writer, disks, manifests)
    finally:
        writer.close()
        orphans |= writer.stored_ids
    summary.bytes_new, summary.bytes_new_plain, summary.chunks_new = writer.bytes_stored, writer.bytes_plain, writer.chunks_stored
    for d in summary.disks:
        d.chunks_new = writer.new_by_disk.get(d.name, 0)
    if cancel is not None and cancel.is_set():
        raise BackupCancelled(item_id=item_id)
    summary.seconds = round(time.monotonic() - started, 3)
    manifest = PointManifest(
        item_id=item_id, point_id=point_id, created=repo.clock.now(), meta=meta, disks=manifests,
        parent_point_id=parent_point_id, stats=_stats(summary),
    )
    _commit(repo, manifest)
    progress.update(total, total, "done")
    return summary


def _backup_disk(repo, writer: ChunkWriter, src: DiskSource, parent_disk: DiskManifest | None, summary: BackupSummary,
                 progress: Progress, base: int, total: int, cancel, lock) -> DiskManifest:
    cs = repo.chunk_size
    if parent_disk is not None and parent_disk.chunk_size != cs:
        parent_disk = None
    changed = src.changed_extents() if parent_disk is not None else None
    ds = DiskSummary(src.name, src.size)
    summary.disks.append(ds)
    ids: list[Any] = []
    phase = f"backup {src.name}"
    ahead: ReadAhead[int] = ReadAhead(src)
    try:
        for plan in plan_chunks(src.size, cs, src.data_extents(), changed):
            if cancel is not None and cancel.is_set():
                raise BackupCancelled(item_id=summary.item_id)
            lock.refresh_if_due()
            cid = _known(plan, parent_disk, writer, ds)
            if cid is not None:
                ids.append(cid)
            else:
                ids.append(None)
                ds.bytes_read += sum(n for _, n in plan.pieces)
                for slot, data in ahead.add(len(ids) - 1, plan):
                    ids[slot] = writer.submit(data, src.name)
            progress.update(base + plan.end, total, phase)
        for slot, data in ahead.rest():
            ids[slot] = writer.submit(data, src.name)
    finally:
        ahead.close()
    table = [x if isinstance(x, bytes) else x.result() for x in ids]
    writer.raise_if_failed()
    ds.chunks = len(table)
    ds.chunks_zero = sum(1 for x in table if x == ZERO_ID)
    summary.chunks_total += ds.chunks
    summary.chunks_zero += ds.chunks_zero
    summary.chunks_reused += ds.chunks_reused
    summary.bytes_read += ds.bytes_read
    return DiskManifest(src.name, src.size, src.format, cs, table)


def _known(plan: ChunkPlan, parent_disk: DiskManifest | None, writer: ChunkWriter, ds: DiskSummary) -> bytes | None:
    """The chunk's id when it need not be read (all zeros, or unchanged since the parent); else None."""
    if not plan.pieces:
        return ZERO_ID
    if parent_disk is not None and plan.unchanged and plan.index < len(parent_disk.chunks):
        if parent_disk.chunk_range(plan.index) == (plan.start, plan.end):
            pid = parent_disk.chunks[plan.index]
            if pid == ZERO_ID or writer.is_stored(pid):
                ds.chunks_reused += 1
                return pid
            # the parent's chunk is missing or quarantined: read it again (heals the vault)
    return None


def _confirm_chunks(repo, writer: ChunkWriter, disks: list[DiskSource], manifests: list[DiskManifest]) -> int:
    """List the vault; store again (re-read from the source) any referenced chunk that is not there."""
    where: dict[bytes, tuple[int, int]] = {}
    for di, m in enumerate(manifests):
        for ci, cid in enumerate(m.chunks):
            if cid != ZERO_ID:
                where.setdefault(cid, (di, ci))
    repaired = 0
    for round_ in range(CONFIRM_ROUNDS):
        present = repo.stored_chunk_ids()
        missing = [cid for cid in where if cid not in present]
        if not missing:
            return repaired
        if round_ == CONFIRM_ROUNDS - 1:
            raise StorageUploadNotConfirmed(count=len(missing))
        for cid in missing:
            di, ci = where[cid]
            writer.restore_missing(cid, disks[di], manifests[di], ci)
            repaired += 1
        writer.drain()
    return repaired


def _commit(repo, manifest: PointManifest) -> None:
    """Write the manifest and read it back; on any doubt remove it again and fail."""
    expected = manifest.to_bytes()
    try:
        for _ in range(CONFIRM_ROUNDS):
            repo.write_point(manifest)
            try:
                if repo.load_point(manifest.item_id, manifest.point_id).to_bytes() == expected:
                    return
            except (RecoveryPointNotFound, ObjectCorrupt):
                pass
        raise StorageUploadNotConfirmed(count=1)
    except BaseException:
        try:
            repo.backend.delete(f"points/{manifest.item_id}/{manifest.point_id}")
        except Exception:
            pass
        raise


def _stats(s: BackupSummary) -> dict[str, Any]:
    keys = ("bytes_read", "bytes_new", "bytes_new_plain", "chunks_total", "chunks_new", "chunks_zero", "chunks_reused", "seconds")
    return {k: getattr(s, k) for k in keys}

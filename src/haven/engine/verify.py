"""Verify: structure (every manifest opens, every referenced chunk exists) and, with ``read_data``,
the data itself (every selected chunk is read, authenticated and re-hashed).

Bad chunks are moved to ``quarantine/`` so that the next backup that meets their data stores
them again; the report names every recovery point a missing or bad chunk affects.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from haven.errors import HavenError
from haven.progress import NULL_PROGRESS, PROGRESS_INTERVAL, Progress, Throttled

from .codec import SealError
from .errors import StorageObjectNotFound, UserError
from .format import QUARANTINE, chunk_name

__all__ = ["VerifyReport", "run_verify", "parse_subset"]


@dataclass
class VerifyReport:
    """``ok`` is True when nothing is missing, corrupt or unreadable."""

    points_checked: int = 0
    chunks_referenced: int = 0
    chunks_stored: int = 0
    chunks_read: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    bad_points: list[dict] = field(default_factory=list)  # manifests that do not open: item, point, error
    affected: list[tuple[str, str]] = field(default_factory=list)  # (item_id, point_id), sorted
    chunk_points: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # bad chunk -> points

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.bad_points)

    def as_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


def parse_subset(subset: str | None):
    """``"n/m"`` (the n-th of m slices, 1-based) or ``"p%"``: a predicate on chunk ids; None = all."""
    if subset is None:
        return lambda cid: True
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", subset)
    if m:
        n, total = int(m.group(1)), int(m.group(2))
        if not 1 <= n <= total:
            raise UserError(f"Invalid read-data subset {subset!r}: use n/m with 1 <= n <= m.")
        return lambda cid: int.from_bytes(cid[:4], "big") % total == n - 1
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", subset)
    if m and 0 < float(m.group(1)) <= 100:
        limit = float(m.group(1)) / 100 * 2**32
        return lambda cid: int.from_bytes(cid[:4], "big") < limit
    raise UserError(f"Invalid read-data subset {subset!r}: use n/m (e.g. 1/30) or a percentage (e.g. 5%).")


def run_verify(repo, read_data: bool = False, subset: str | None = None, progress: Progress = NULL_PROGRESS,
               quarantine: bool = True) -> VerifyReport:
    selected = parse_subset(subset)
    progress = Throttled(progress, PROGRESS_INTERVAL)  # the reporter may write to a database: readers must not wait for it
    report = VerifyReport()
    refs: dict[bytes, list[tuple[str, str]]] = {}
    points = repo.point_ids()
    for n, (item, point) in enumerate(points):
        progress.update(n, len(points), "verify manifests")
        try:
            manifest = repo.load_point(item, point)
        except HavenError as exc:
            if exc.transient:
                raise
            report.bad_points.append({"item_id": item, "point_id": point, "error": exc.code})
            continue
        for cid in manifest.stored_ids():
            refs.setdefault(cid, []).append((item, point))
    report.points_checked = len(points)
    report.chunks_referenced = len(refs)
    stored = repo.stored_chunk_ids()
    report.chunks_stored = len(stored)
    missing = {cid for cid in refs if cid not in stored}
    corrupt: set[bytes] = set()
    if read_data:
        todo = sorted(cid for cid in stored if selected(cid))
        corrupt = _read_all(repo, todo, progress, report)
        if quarantine:
            for cid in sorted(corrupt):
                _quarantine(repo, cid)
                report.quarantined.append(cid.hex())
    report.missing = sorted(c.hex() for c in missing)
    report.corrupt = sorted(c.hex() for c in corrupt) + _check_vault_objects(repo)
    affected: set[tuple[str, str]] = {(b["item_id"], b["point_id"]) for b in report.bad_points}
    for cid in missing | corrupt:
        pts = sorted(set(refs.get(cid, [])))
        report.chunk_points[cid.hex()] = pts
        affected.update(pts)
    report.affected = sorted(affected)
    progress.update(1, 1, "verify done")
    return report


def _read_all(repo, todo: list[bytes], progress: Progress, report: VerifyReport) -> set[bytes]:
    bad: set[bytes] = set()
    lock = threading.Lock()
    done = [0]

    def check(cid: bytes) -> None:
        ok = _check_chunk(repo, cid)
        with lock:
            done[0] += 1
            if not ok:
                bad.add(cid)
            now_done = done[0]
        progress.update(now_done, len(todo), "verify data")

    workers = (repo.workers or os.cpu_count() or 2) + 2
    with ThreadPoolExecutor(workers, thread_name_prefix="haven-verify") as pool:
        for f in [pool.submit(check, cid) for cid in todo]:
            f.result()
    report.chunks_read = len(todo)
    return bad


def _check_chunk(repo, cid: bytes) -> bool:
    """True if the chunk opens and re-hashes to its id (re-read a few times: wire errors pass)."""
    for _ in range(3):
        try:
            raw = repo.backend.load(chunk_name(cid))
        except StorageObjectNotFound:
            return True  # deleted meanwhile (GC); structure check reports it if referenced
        try:
            data = repo.codec.open_chunk(cid, raw)
        except SealError:
            continue
        if repo.codec.chunk_id(data) == cid:
            return True
    return False


def _quarantine(repo, cid: bytes) -> None:
    """Move a bad chunk aside (kept for forensics); the next backup meeting its data stores it anew."""
    name = chunk_name(cid)
    try:
        raw = repo.backend.load(name)
    except StorageObjectNotFound:
        return
    stamp = repo.clock.now().strftime("%Y%m%dT%H%M%S")
    repo.backend.store(f"{QUARANTINE}{cid.hex()}.{stamp}", raw)
    repo.backend.delete(name)


def _check_vault_objects(repo) -> list[str]:
    """The vault's own sealed objects (its description, GC's pending list): names of those that fail."""
    from .codec import DOMAIN_META
    from .errors import StorageObjectNotFound
    from .format import GC_PENDING, VAULT_INFO

    bad = []
    for name in (VAULT_INFO, GC_PENDING):
        try:
            repo.load_sealed(name, DOMAIN_META, name.encode())
        except StorageObjectNotFound:
            continue  # gc/pending exists only once GC has run
        except HavenError as exc:
            if exc.transient:
                raise
            bad.append(name)
    return bad

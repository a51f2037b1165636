"""The read path: whole-disk restores (sparse raw or qcow2) and a random-access disk reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from haven.progress import NULL_PROGRESS, PROGRESS_INTERVAL, Progress, Throttled

from .codec import ZERO_ID
from .diskwrite import DiskWriter
from .errors import ChunkMissing, DiskNotFound, RestoreTargetFailed, StorageObjectNotFound, UserError
from .format import DiskManifest

__all__ = ["RestoreSummary", "restore_disk", "DiskReader"]


@dataclass
class RestoreSummary:
    item_id: str
    point_id: str
    disk: str
    path: str
    format: str
    size: int
    bytes_written: int
    chunks_read: int
    seconds: float


def _disk(repo, item_id: str, point_id: str, disk_name: str) -> DiskManifest:
    manifest = repo.load_point(item_id, point_id)
    disk = manifest.disk(disk_name)
    if disk is None:
        raise DiskNotFound(point_id=point_id, disk=disk_name, disks=", ".join(d.name for d in manifest.disks))
    return disk


def fetch_chunk(repo, cid: bytes, item_id: str, point_id: str) -> bytes:
    try:
        return repo.load_chunk(cid)
    except StorageObjectNotFound:
        raise ChunkMissing(chunk_id=cid.hex(), item_id=item_id, point_id=point_id) from None


def restore_disk(repo, item_id: str, point_id: str, disk_name: str, target_path, fmt: str = "raw",
                 progress: Progress = NULL_PROGRESS) -> RestoreSummary:
    """Write the disk to ``target_path`` (replacing it only when complete): holes stay holes,
    every chunk is authenticated, a failure leaves no partial target behind."""
    if fmt not in ("raw", "qcow2"):
        raise UserError(f"Unsupported restore format {fmt!r}; use 'raw' or 'qcow2'.")
    started = time.monotonic()
    progress = Throttled(progress, PROGRESS_INTERVAL)  # the reporter may write to a database: workers must not wait for it
    disk = _disk(repo, item_id, point_id, disk_name)
    target = Path(target_path)
    partial = target.with_name(target.name + ".partial")
    raw_path = partial if fmt == "raw" else target.with_name(target.name + ".raw.partial")
    try:
        written, chunks = _write_raw(repo, disk, raw_path, item_id, point_id, progress)
        if fmt == "qcow2":
            partial.unlink(missing_ok=True)  # a leftover or a planted symlink: qemu-img would write through it
            _convert_qcow2(raw_path, partial)
        os.replace(partial, target)
    except OSError as exc:
        raise RestoreTargetFailed(path=str(target), detail=exc.strerror or str(exc)) from exc
    finally:
        for p in {partial, raw_path}:
            if p.exists():
                p.unlink()
    return RestoreSummary(item_id, point_id, disk_name, str(target), fmt, disk.size, written, chunks,
                          round(time.monotonic() - started, 3))


def _write_raw(repo, disk: DiskManifest, path: Path, item_id: str, point_id: str, progress: Progress) -> tuple[int, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a leftover of an interrupted restore, or a planted symlink: never written through
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, disk.size)
        writer = DiskWriter(fd, disk.chunk_size)
        try:
            written, chunks = _copy_chunks(repo, disk, writer, item_id, point_id, progress)
        finally:
            writer.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    progress.update(disk.size, disk.size, f"restore {disk.name}")
    return written, chunks


def _copy_chunks(repo, disk: DiskManifest, writer: DiskWriter, item_id: str, point_id: str,
                 progress: Progress) -> tuple[int, int]:
    """Fetch, open and write every stored chunk of ``disk`` on worker threads (zero chunks stay holes)."""
    todo = [(i, cid) for i, cid in enumerate(disk.chunks) if cid != ZERO_ID]
    workers = repo.workers or os.cpu_count() or 2
    slots = threading.Semaphore(4 * workers)
    done = [0]
    lock = threading.Lock()

    def one(i: int, cid: bytes) -> int:
        try:
            data = fetch_chunk(repo, cid, item_id, point_id)
            start, end = disk.chunk_range(i)
            if len(data) != end - start:
                raise ChunkMissing(chunk_id=cid.hex(), item_id=item_id, point_id=point_id)
            writer.write(data, start)
            with lock:
                done[0] += len(data)
                now_done = done[0]
            progress.update(now_done, disk.size, f"restore {disk.name}")
            return len(data)
        finally:
            slots.release()

    with ThreadPoolExecutor(workers + 2, thread_name_prefix="haven-restore") as pool:
        futures = []
        for i, cid in todo:
            slots.acquire()
            futures.append(pool.submit(one, i, cid))
            if futures[-1].done() and futures[-1].exception():
                break
        return sum(f.result() for f in futures), len(todo)


def _convert_qcow2(raw: Path, out: Path) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise UserError("Restoring as qcow2 needs qemu-img (package qemu-utils) on this host.")
    res = subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        raise OSError(f"qemu-img convert failed: {res.stderr.strip()}")


class DiskReader:
    """Random access to one disk of a recovery point (for NBD exports and file recovery).

    ``read(offset, length)`` returns exactly the bytes asked for (clipped at ``size``); a small
    LRU cache of decoded chunks makes sequential small reads cheap. Thread-safe.
    """

    CACHE_CHUNKS = 16

    def __init__(self, repo, item_id: str, point_id: str, disk_name: str):
        self._repo, self._item, self._point = repo, item_id, point_id
        self._disk = _disk(repo, item_id, point_id, disk_name)
        self.size = self._disk.size
        self.name = disk_name
        self.format = self._disk.format
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _chunk(self, index: int) -> bytes:
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        start, end = self._disk.chunk_range(index)
        cid = self._disk.chunks[index]
        data = bytes(end - start) if cid == ZERO_ID else fetch_chunk(self._repo, cid, self._item, self._point)
        with self._lock:
            self._cache[index] = data
            while len(self._cache) > self.CACHE_CHUNKS:
                self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = min(self.size, offset + length)
        cs = self._disk.chunk_size
        out = bytearray()
        pos = offset
        while pos < end:
            index = pos // cs
            data = self._chunk(index)
            lo = pos - index * cs
            take = min(end - pos, len(data) - lo)
            out += data[lo : lo + take]
            pos += take
        return bytes(out)

    def is_zero(self, offset: int, length: int) -> bool:
        """True if the range lies entirely in zero chunks (lets NBD report holes without reading)."""
        cs = self._disk.chunk_size
        end = min(self.size, offset + length)
        return all(self._disk.chunks[i] == ZERO_ID for i in range(offset // cs, -(-end // cs)))

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

"""The chunk pipeline: hash, compress, encrypt and verify on worker threads; upload on others.

BLAKE3 and zstd release the GIL, so compute threads run in parallel; AES-GCM does not but is
~10 GB/s. Memory is bounded by a semaphore on chunks in flight (read but not yet stored).
Every sealed chunk is opened again and re-hashed before it is uploaded.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from .codec import ZERO_ID, is_zero
from .errors import ReadBackMismatch, SourceReadFailed
from .format import DiskManifest, chunk_name
from .planning import ChunkPlan, _Cursor, normalise
from .reading import read_chunk
from .source import DiskSource

__all__ = ["ChunkWriter"]

UPLOAD_WORKERS = 4


class ChunkWriter:
    """Stores the chunks one backup meets; knows which ids are already in the vault."""

    def __init__(self, repo, known: set[bytes], cancel: threading.Event | None = None,
                 compute_workers: int | None = None, upload_workers: int | None = None):
        self.codec, self.backend = repo.codec, repo.backend
        self.known = known
        self.claimed: set[bytes] = set()
        #: ids this writer stored (a failed backup hands them to GC as orphans)
        self.stored_ids: set[bytes] = set()
        self._lock = threading.Lock()
        n = compute_workers or getattr(repo, "workers", 0) or os.cpu_count() or 2
        u = upload_workers or getattr(repo, "upload_workers", 0) or UPLOAD_WORKERS
        self._compute = ThreadPoolExecutor(n, thread_name_prefix="haven-chunk")
        self._upload = ThreadPoolExecutor(u, thread_name_prefix="haven-upload")
        self._slots = threading.Semaphore(2 * n + 2 * u)
        self._futures: list[Future] = []
        self._error: BaseException | None = None
        self.bytes_stored = self.bytes_plain = self.chunks_stored = 0
        self.new_by_disk: dict[str, int] = {}

    # -- state --
    def is_stored(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self.known or cid in self.claimed

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc

    # -- submitting --
    def submit(self, data: bytes | bytearray, disk: str) -> Future:
        """Queue one chunk; returns a future of its id. Blocks while the pipeline is full."""
        self.raise_if_failed()
        self._slots.acquire()
        try:
            fut = self._compute.submit(self._process, data, disk)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._futures.append(fut)
        return fut

    def _process(self, data: bytes | bytearray, disk: str) -> bytes:
        handed_over = False
        try:
            if is_zero(data):
                return ZERO_ID
            cid = self.codec.chunk_id(data)
            with self._lock:
                if cid in self.known or cid in self.claimed:
                    return cid
                self.claimed.add(cid)
            sealed = self.seal_verified(cid, data)
            up = self._upload.submit(self._store, cid, sealed, len(data), disk)
            handed_over = True
            with self._lock:
                self._futures.append(up)
            return cid
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            if not handed_over:
                self._slots.release()

    def seal_verified(self, cid: bytes, data: bytes | bytearray) -> bytes:
        """Seal a chunk, then open the sealed bytes and re-hash them: they must give ``cid`` back."""
        sealed = self.codec.seal_chunk(cid, data)
        try:
            back = self.codec.open_chunk(cid, sealed, max_size=len(data))
        except Exception as exc:
            raise ReadBackMismatch(chunk_id=cid.hex()) from exc
        if len(back) != len(data) or self.codec.chunk_id(back) != cid:
            raise ReadBackMismatch(chunk_id=cid.hex())
        return sealed

    def _store(self, cid: bytes, sealed: bytes, plain: int, disk: str) -> None:
        try:
            if self._error is None:
                self.backend.store(chunk_name(cid), sealed)
                with self._lock:
                    self.bytes_stored += len(sealed)
                    self.bytes_plain += plain
                    self.chunks_stored += 1
                    self.stored_ids.add(cid)
                    self.new_by_disk[disk] = self.new_by_disk.get(disk, 0) + 1
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self._slots.release()

    # -- repair of lost writes --
    def restore_missing(self, cid: bytes, src: DiskSource, manifest: DiskManifest, index: int) -> None:
        """Read chunk ``index`` of ``src`` again and store it (it must still hash to ``cid``)."""
        start, end = manifest.chunk_range(index)
        spans = _Cursor(normalise(src.data_extents(), manifest.size)).overlapping(start, end)
        plan = ChunkPlan(index, start, end, tuple((s, e - s) for s, e in spans), False)
        data = read_chunk(src, plan)
        if self.codec.chunk_id(data) != cid:
            raise SourceReadFailed(disk=src.name, offset=start, detail="the disk changed while it was being backed up")
        self.backend.store(chunk_name(cid), self.seal_verified(cid, data))
        with self._lock:
            self.stored_ids.add(cid)

    # -- ending --
    def drain(self) -> None:
        """Wait for every queued chunk to be stored; raise the first error any of them met."""
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                break
            wait(pending)
        with self._lock:
            self._futures = []
        self.raise_if_failed()

    def close(self) -> None:
        self._compute.shutdown(wait=True, cancel_futures=True)
        self._upload.shutdown(wait=True, cancel_futures=True)

"""A recovery point's disk as a seekable, read-only file: what file-system readers need.

``DiskImage`` holds one disk's chunk table and reads through a ``ChunkCache`` (LRU, bounded in
bytes, shared by every reader of a process); ``DiskImage.open()`` gives an independent file
object (its own position) over it, so concurrent readers never share a seek pointer. Every stored
chunk is fetched through ``Repository.load_chunk`` (authenticated, retried like every other read)
and must have exactly the length the manifest gives; zero chunks (holes) read as zeros without a
fetch. Sequential reads fetch the next chunks ahead on the cache's small thread pool.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

from .codec import ZERO_ID
from .errors import ChunkMissing
from .restore import _disk, fetch_chunk

__all__ = ["ChunkCache", "DiskImage", "DiskFile", "DEFAULT_CACHE_BYTES", "DEFAULT_READ_AHEAD"]

DEFAULT_CACHE_BYTES = 256 << 20
DEFAULT_READ_AHEAD = 4


class ChunkCache:
    """Decoded chunks by key, least recently used dropped first once ``max_bytes`` is exceeded.

    ``get(key, load)`` runs ``load`` at most once at a time per key: concurrent readers of the same
    chunk wait for the one fetch. ``prefetch`` starts a load in the background (never blocking);
    a failed prefetch is forgotten, so the reader that needs the chunk fetches it again and sees
    the error itself."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, workers: int = 4):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._loading: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def _put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._data[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, dropped = self._data.popitem(last=False)
            self._bytes -= len(dropped)

    def _claim(self, key: Hashable) -> tuple[bytes | None, Future, bool]:
        """Under the lock: the cached data, or the load in flight, or a new future this caller must fill."""
        with self._lock:
            data = self._data.get(key)
            if data is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return data, None, False  # type: ignore[return-value]
            fut = self._loading.get(key)
            if fut is not None:
                return None, fut, False
            fut = Future()
            self._loading[key] = fut
            self.misses += 1
            return None, fut, True

    def _fill(self, key: Hashable, fut: Future, load: Callable[[], bytes]) -> bytes:
        try:
            data = load()
        except BaseException as exc:
            with self._lock:
                self._loading.pop(key, None)
            fut.set_exception(exc)
            raise
        with self._lock:
            self._loading.pop(key, None)
            self._put(key, data)
        fut.set_result(data)
        return data

    def get(self, key: Hashable, load: Callable[[], bytes]) -> bytes:
        data, fut, mine = self._claim(key)
        if data is not None:
            return data
        if mine:
            return self._fill(key, fut, load)
        try:
            return fut.result()
        except Exception:  # noqa: BLE001 - a failed prefetch or another reader's failure: fetch it ourselves
            return self.get(key, load)

    def prefetch(self, key: Hashable, load: Callable[[], bytes]) -> None:
        data, fut, mine = self._claim(key)
        if not mine:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="haven-readahead")
            pool = self._pool

        def run() -> None:
            try:
                self._fill(key, fut, load)
            except BaseException:  # noqa: BLE001 - the reader that needs it fetches it again and raises
                pass

        pool.submit(run)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def close(self) -> None:
        self.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DiskImage:
    """One disk of a recovery point, read chunk by chunk through ``cache``."""

    def __init__(self, repo, item_id: str, point_id: str, disk_name: str, cache: ChunkCache | None = None,
                 read_ahead: int = DEFAULT_READ_AHEAD):
        self._repo, self.item_id, self.point_id = repo, item_id, point_id
        self._disk = _disk(repo, item_id, point_id, disk_name)
        self.name = disk_name
        self.size = self._disk.size
        self.chunk_size = self._disk.chunk_size
        self.read_ahead = max(0, read_ahead)
        self.cache = cache if cache is not None else ChunkCache(max_bytes=max(self.chunk_size, 1) * 16)
        self._scope = getattr(getattr(repo, "backend", None), "location", id(repo))
        self._zero = bytes(self.chunk_size)

    def _loader(self, index: int) -> Callable[[], bytes]:
        cid = self._disk.chunks[index]
        start, end = self._disk.chunk_range(index)

        def load() -> bytes:
            data = fetch_chunk(self._repo, cid, self.item_id, self.point_id)
            if len(data) != end - start:
                raise ChunkMissing(chunk_id=cid.hex(), item_id=self.item_id, point_id=self.point_id)
            return data

        return load

    def chunk(self, index: int) -> bytes:
        cid = self._disk.chunks[index]
        if cid == ZERO_ID:
            start, end = self._disk.chunk_range(index)
            return self._zero if end - start == self.chunk_size else bytes(end - start)
        return self.cache.get((self._scope, cid), self._loader(index))

    def prefetch(self, first: int, count: int) -> None:
        for index in range(first, min(first + count, len(self._disk.chunks))):
            cid = self._disk.chunks[index]
            if cid != ZERO_ID:
                self.cache.prefetch((self._scope, cid), self._loader(index))

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly the bytes of [offset, offset+length) clipped at the disk's end."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        cs = self.chunk_size
        first = offset // cs
        if first == (end - 1) // cs:
            data = self.chunk(first)
            lo = offset - first * cs
            return data[lo : lo + end - offset]
        out = bytearray()
        pos = offset
        while pos < end:
            index = pos // cs
            data = self.chunk(index)
            lo = pos - index * cs
            take = min(end - pos, len(data) - lo)
            out += memoryview(data)[lo : lo + take]
            pos += take
        return bytes(out)

    def is_zero(self, offset: int, length: int) -> bool:
        cs = self.chunk_size
        end = min(self.size, offset + length)
        return all(self._disk.chunks[i] == ZERO_ID for i in range(offset // cs, -(-end // cs)))

    def open(self) -> "DiskFile":
        return DiskFile(self)


class DiskFile(io.RawIOBase):
    """A read-only file over a ``DiskImage`` with its own position (one per reader thread)."""

    def __init__(self, image: DiskImage, offset: int = 0, size: int | None = None):
        super().__init__()
        self.image = image
        self._base = offset
        self.size = image.size - offset if size is None else size
        self._pos = 0
        self._last_end = -1  # where the previous read ended: a read starting there is sequential

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        size = max(0, min(size, self.size - self._pos))
        if size == 0:
            return b""
        absolute = self._base + self._pos
        data = self.image.read_at(absolute, size)
        self._pos += len(data)
        self._read_ahead(absolute, len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def _read_ahead(self, absolute: int, length: int) -> None:
        if not self.image.read_ahead or not length:
            return
        sequential = absolute == self._last_end
        self._last_end = absolute + length
        if sequential:
            self.image.prefetch((absolute + length - 1) // self.image.chunk_size + 1, self.image.read_ahead)

"""Reading chunks' bytes from a ``DiskSource``: one chunk (``read_chunk``, also used by the repair
of lost writes), or a disk's chunks ahead of the pipeline on a few threads (``ReadAhead``), so
several requests are in flight at once (an NBD export answers each one a round trip later; a
cold file needs queue depth to reach its disk's speed)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from haven.errors import HavenError

from .errors import SourceReadFailed
from .planning import ChunkPlan
from .source import DiskSource

__all__ = ["read_chunk", "ReadAhead", "READERS"]

K = TypeVar("K")
#: reads in flight per disk (NbdDiskSource keeps as many connections)
READERS = 4


def read_chunk(src: DiskSource, plan: ChunkPlan) -> bytes | bytearray:
    """The chunk's bytes: the data pieces read from ``src``, zeros elsewhere."""
    length = plan.end - plan.start
    try:
        if len(plan.pieces) == 1 and plan.pieces[0] == (plan.start, length):
            data = src.read(plan.start, length)
        else:
            buf = bytearray(length)
            for off, n in plan.pieces:
                buf[off - plan.start : off - plan.start + n] = src.read(off, n)
            data = buf
    except HavenError:
        raise
    except (OSError, ValueError) as exc:
        raise SourceReadFailed(disk=src.name, offset=plan.start, detail=str(exc)) from exc
    if len(data) != length:
        raise SourceReadFailed(disk=src.name, offset=plan.start, detail=f"short read ({len(data)} of {length} bytes)")
    return data


class ReadAhead(Generic[K]):
    """Reads the chunks it is given on ``readers`` threads and hands them back in the order given,
    at most ``readers`` read and ``readers`` more waiting ahead of the caller (bounded memory)."""

    def __init__(self, src: DiskSource, readers: int = READERS):
        self._src = src
        self._depth = 2 * readers
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="haven-read")
        self._queue: deque[tuple[K, Future]] = deque()

    def add(self, key: K, plan: ChunkPlan) -> list[tuple[K, bytes | bytearray]]:
        """Queue ``plan``'s read; return the reads that must be taken now to stay within bounds
        (oldest first, waiting for them)."""
        self._queue.append((key, self._pool.submit(read_chunk, self._src, plan)))
        out = []
        while len(self._queue) > self._depth:
            k, fut = self._queue.popleft()
            out.append((k, fut.result()))
        return out

    def rest(self) -> list[tuple[K, bytes | bytearray]]:
        """Every read still queued, in order (waiting for them)."""
        out = [(k, fut.result()) for k, fut in self._queue]
        self._queue.clear()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()

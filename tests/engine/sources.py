"""In-memory ``DiskSource`` for engine tests: records every read so tests can assert what was read."""

from __future__ import annotations

import random
import threading

from haven.engine import Extent


class MemorySource:
    """A disk held as sparse segments; ``reads`` lists every (offset, length) the engine asked for."""

    def __init__(self, name: str, size: int, segments: dict[int, bytes] | None = None, changed=None, fmt: str = "raw"):
        self.name, self.size, self.format = name, size, fmt
        self.segments = dict(sorted((segments or {}).items()))
        self._changed = changed
        self.reads: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def data_extents(self):
        for off, data in self.segments.items():
            yield Extent(off, len(data))

    def changed_extents(self):
        return None if self._changed is None else iter(self._changed)

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self.reads.append((offset, length))
        buf = bytearray(length)
        for off, data in self.segments.items():
            lo, hi = max(off, offset), min(off + len(data), offset + length)
            if lo < hi:
                buf[lo - offset : hi - offset] = data[lo - off : hi - off]
        return bytes(buf)

    def image(self) -> bytes:
        return self.read(0, self.size) if self.size else b""

    def bytes_read(self) -> int:
        return sum(n for _, n in self.reads)

    def with_changes(self, changes: dict[int, bytes], report_changed: bool = True) -> "MemorySource":
        """A copy with ``changes`` written over it; ``changed_extents`` names them (or None)."""
        segs = dict(self.segments)
        base = self.image()
        for off, data in changes.items():
            segs[off] = data
        new = MemorySource(self.name, self.size, {}, None, self.format)
        img = bytearray(base)
        for off, data in changes.items():
            img[off : off + len(data)] = data
        # rebuild segments: the old data extents plus the changes, read from the new image
        spans = sorted([(o, o + len(d)) for o, d in self.segments.items()] + [(o, o + len(d)) for o, d in changes.items()])
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        new.segments = {s: bytes(img[s:e]) for s, e in merged}
        new._changed = [Extent(o, len(d)) for o, d in sorted(changes.items())] if report_changed else None
        return new


def random_disk(name: str, size: int, seed: int, fill: float = 0.5, chunk: int = 1 << 16) -> MemorySource:
    """A sparse disk: about ``fill`` of its ``chunk``-sized blocks hold data (mixed compressible/random)."""
    rng = random.Random(seed)
    segs = {}
    for off in range(0, size, chunk):
        if rng.random() < fill:
            n = min(chunk, size - off)
            if rng.random() < 0.5:
                segs[off] = rng.randbytes(n)
            else:
                word = b"haven %d " % rng.randrange(1000)
                segs[off] = (word * (n // len(word) + 1))[:n]
    return MemorySource(name, size, segs)

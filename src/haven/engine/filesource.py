"""``DiskSource`` over a raw image file, finding holes with SEEK_DATA/SEEK_HOLE (tests, benchmarks,
and a fallback for adapters that hand over a plain raw file)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .source import Extent

__all__ = ["RawFileSource"]


class RawFileSource:
    """A raw image file as a ``DiskSource``. ``changed`` (a list of extents) simulates a bitmap."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None, changed: list[Extent] | None = None,
                 fmt: str = "raw"):
        self.path = Path(path)
        self.name = name or self.path.name
        self.format = fmt
        self.size = self.path.stat().st_size
        self._changed = changed
        self._fd = os.open(self.path, os.O_RDONLY)

    def data_extents(self) -> Iterator[Extent]:
        pos = 0
        while pos < self.size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                return
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            yield Extent(start, end - start)
            pos = end

    def changed_extents(self) -> Iterator[Extent] | None:
        return None if self._changed is None else iter(self._changed)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "RawFileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

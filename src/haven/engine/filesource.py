"""``DiskSource`` over a raw image file, finding holes with SEEK_DATA/SEEK_HOLE (tests, benchmarks,
and a fallback for adapters that hand over a plain raw file)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from .source import Extent

__all__ = ["RawFileSource", "scan_data_extents"]


def scan_data_extents(fd: int, size: int) -> list[Extent]:
    """The ranges of an open file (or block device) that hold data, by ``SEEK_DATA``/``SEEK_HOLE``;
    all of it when the file system cannot tell."""
    out: list[Extent] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append(Extent(start, end - start))
            pos = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [Extent(0, size)] if size else []
    return out


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
        return iter(scan_data_extents(self._fd, self.size))

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

"""One hint to the kernel, used wherever the engine moves bulk data it will not read again soon."""

from __future__ import annotations

import os

__all__ = ["drop_pages"]


def drop_pages(fd: int, offset: int = 0, length: int = 0) -> None:
    """Drop the range's clean pages from the page cache and start writing back its dirty ones
    (``POSIX_FADV_DONTNEED``; ``length`` 0 means to the end of the file). A hint only: a file
    system that does not take it loses nothing, so errors are ignored."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass

"""Writing a restored disk image: around the page cache where the file system allows it.

A restore writes gigabytes once. Through the page cache every page is copied, allocated (which
on a busy host means reclaiming someone else's page first) and later flushed, and threads writing
one file contend for its inode lock. Writes of whole 4 KiB blocks go straight to the device with
``O_DIRECT`` instead; what cannot (a file system without it, a piece that is not block-aligned)
goes through the page cache with writeback started at once. Measured on a 2.7 GB restore: 1.6 s
direct against 2.4 s buffered with early writeback and 6.4-8.2 s plain buffered (4 threads).
Python has no aligned allocator, so each thread copies its piece into its own page-aligned
``mmap`` buffer first (a memcpy, far cheaper than the page-cache path).
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

from .pagecache import drop_pages

__all__ = ["DiskWriter"]

#: Alignment of offsets, lengths and buffers for O_DIRECT (covers 512-byte and 4 KiB devices).
BLOCK = 4096


def _open_direct(fd: int) -> int | None:
    """A second descriptor of the same open file with O_DIRECT, or None if unsupported.

    Reopened through /proc/self/fd so it is the very file ``fd`` names, never a path an attacker
    could have swapped in between."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | flag | os.O_CLOEXEC)
    except OSError:  # tmpfs and some network file systems refuse O_DIRECT; no /proc
        return None


def _pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    """Write as much of ``view`` as the descriptor takes; returns how much was written."""
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            break
        done += n
    return done


class DiskWriter:
    """Writes pieces of a disk image into an open file; thread-safe. ``close`` does not fsync."""

    def __init__(self, fd: int, max_piece: int):
        self._fd = fd
        self._direct = _open_direct(fd)
        self._use_direct = self._direct is not None
        self._max = -(-max_piece // BLOCK) * BLOCK
        self._local = threading.local()
        self._buffers: list[mmap.mmap] = []
        self._lock = threading.Lock()

    @property
    def direct(self) -> bool:
        return self._use_direct

    def _buffer(self) -> mmap.mmap:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, self._max)
            with self._lock:
                self._buffers.append(buf)
        return buf

    def write(self, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset``; raises OSError (ENOSPC for a short write)."""
        view = memoryview(data)
        done = 0
        if self._use_direct and offset % BLOCK == 0 and len(view) <= self._max:
            aligned = len(view) - len(view) % BLOCK
            if aligned:
                done = self._write_direct(view[:aligned], offset)
        if done < len(view):
            rest = view[done:]
            if _pwrite_all(self._fd, rest, offset + done) != len(rest):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the only way a file write falls short
            drop_pages(self._fd, offset + done, len(rest))  # starts writeback now: the closing fsync waits less

    def _write_direct(self, view: memoryview, offset: int) -> int:
        """How much of ``view`` went straight to the device (in whole blocks); 0 if the file
        system refuses the alignment (a larger block size), after which the page cache is used."""
        buf = self._buffer()
        buf[: len(view)] = view
        try:
            done = _pwrite_all(self._direct, memoryview(buf)[: len(view)], offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._use_direct = False
            return 0
        return done - done % BLOCK  # a partial block goes again through the page cache

    def close(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        with self._lock:
            for buf in self._buffers:
                try:
                    buf.close()
                except BufferError:  # still viewed from the traceback of an error in flight: freed with it
                    pass
            self._buffers.clear()

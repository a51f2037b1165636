"""DiskSources: the bytes of one disk of a point-in-time view, and which ranges hold data or changed.

* :class:`FileDiskSource` — a raw image file read directly; data ranges from ``SEEK_DATA``/``SEEK_HOLE``.
* :class:`NbdDiskSource` — an NBD export (QEMU's own server for live VMs, ``qemu-nbd`` for stopped
  qcow2 images, libvirt's pull-mode backup); data ranges from the ``base:allocation`` block status,
  changed ranges from the ``qemu:dirty-bitmap:NAME`` meta context.
* :class:`QemuNbdServer` — runs ``qemu-nbd`` read-only over a unix socket for an image file.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from haven.engine.filesource import scan_data_extents
from haven.engine.pagecache import drop_pages
from haven.engine.source import Extent
from haven.hypervisor.errors import DiskInUse, NbdReadFailed, SnapshotFailed

__all__ = ["FileDiskSource", "NbdDiskSource", "QemuNbdServer", "merge_extents", "total_length"]

# NBD base:allocation flags
NBD_STATE_HOLE = 1
NBD_STATE_ZERO = 2
# qemu:dirty-bitmap flag
NBD_STATE_DIRTY = 1

MAX_REQUEST = 32 * 1024 * 1024  # QEMU's NBD server refuses larger reads
STATUS_WINDOW = 1 << 30


def merge_extents(extents: Iterator[Extent] | list[Extent]) -> list[Extent]:
    """Sort and coalesce touching/overlapping ranges."""
    out: list[Extent] = []
    for e in sorted((e for e in extents if e.length > 0), key=lambda e: e.offset):
        if out and e.offset <= out[-1].end:
            last = out[-1]
            out[-1] = Extent(last.offset, max(last.end, e.end) - last.offset)
        else:
            out.append(e)
    return out


def total_length(extents: list[Extent]) -> int:
    return sum(e.length for e in extents)


class FileDiskSource:
    """A raw image file (or a block device), read with ``pread``; holes are skipped.

    Used for stopped VMs only, so what it reads is nobody's working set: each range read leaves
    the page cache at once (as borg does), and backing up a large image does not evict the host's
    running VMs' pages. Live VMs are read through QEMU (``NbdDiskSource``) and are not touched."""

    def __init__(self, name: str, path: str | os.PathLike, format: str = "raw", size: int | None = None):
        self.name, self.path, self.format = name, str(path), format
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = size if size is not None else os.lseek(self._fd, 0, os.SEEK_END)
        self._extents: list[Extent] | None = None
        self._lock = threading.Lock()
        #: bytes read through read(), for statistics and tests
        self.bytes_read = 0

    def data_extents(self) -> Iterator[Extent]:
        with self._lock:
            if self._extents is None:
                self._extents = scan_data_extents(self._fd, self.size)
        return iter(self._extents)

    def changed_extents(self) -> Iterator[Extent] | None:
        return None

    def read(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < length:
            piece = os.pread(self._fd, length - got, offset + got)
            if not piece:
                parts.append(bytes(length - got))  # short file: the rest reads as zeros
                break
            parts.append(piece)
            got += len(piece)
        drop_pages(self._fd, offset, got)
        with self._lock:
            self.bytes_read += length
        return b"".join(parts)

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


class NbdDiskSource:
    """One NBD export, read by a small pool of libnbd connections (safe to share between threads)."""

    def __init__(
        self,
        name: str,
        socket_path: str,
        export: str,
        size: int | None = None,
        format: str = "raw",
        bitmap: str | None = None,
        tls: bool = False,
        connections: int = 4,
    ):
        import nbd  # Debian's python3-libnbd, linked into the venv

        self._nbd = nbd
        self.name, self.format = name, format
        self.socket_path, self.export, self.bitmap = socket_path, export, bitmap
        self._bitmap_context = f"qemu:dirty-bitmap:{bitmap}" if bitmap else None
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._all: list = []
        self._max = max(1, connections)
        self._lock = threading.Lock()
        self._closed = False
        self._data: list[Extent] | None = None
        self._changed: list[Extent] | None = None
        meta = self._connect(meta=True)
        self._meta = meta
        self.size = size if size is not None else meta.get_size()
        if self._bitmap_context and not meta.can_meta_context(self._bitmap_context):
            raise SnapshotFailed(name=name, reason=f"the export does not offer {self._bitmap_context}")
        #: bytes read through read(), and the most reads that were in flight at once, for statistics and tests
        self.bytes_read = 0
        self.peak_in_flight = 0
        self._in_flight = 0

    def _connect(self, meta: bool = False):
        h = self._nbd.NBD()
        if meta:
            h.add_meta_context("base:allocation")
            if self._bitmap_context:
                h.add_meta_context(self._bitmap_context)
        h.set_export_name(self.export)
        try:
            h.connect_unix(self.socket_path)
        except self._nbd.Error as exc:
            raise NbdReadFailed(disk=self.name, reason=str(exc)) from exc
        with self._lock:
            self._all.append(h)
        return h

    # ---- extents ----

    def _walk(self, context: str) -> Iterator[tuple[int, int, int]]:
        """(offset, length, flags) over the whole disk for one meta context."""
        off = 0
        h = self._meta
        while off < self.size:
            got: list[tuple[int, int, int]] = []

            def cb(ctx: str, start: int, entries: list[int], err: int) -> int:
                if ctx != context:
                    return 0
                pos = start
                for i in range(0, len(entries) - 1, 2):
                    length, flags = entries[i], entries[i + 1]
                    got.append((pos, length, flags))
                    pos += length
                return 0

            with self._lock:
                try:
                    h.block_status(min(self.size - off, STATUS_WINDOW), off, cb)
                except self._nbd.Error as exc:
                    raise NbdReadFailed(disk=self.name, reason=str(exc)) from exc
            if not got:
                raise NbdReadFailed(disk=self.name, reason=f"no block status for {context} at {off}")
            for pos, length, flags in got:
                length = min(length, self.size - pos)
                if length <= 0:
                    break
                yield pos, length, flags
                off = pos + length

    def data_extents(self) -> Iterator[Extent]:
        if self._data is None:
            self._data = merge_extents(
                Extent(o, n) for o, n, f in self._walk("base:allocation") if not f & NBD_STATE_ZERO
            )
        return iter(self._data)

    def changed_extents(self) -> Iterator[Extent] | None:
        if not self._bitmap_context:
            return None
        if self._changed is None:
            self._changed = merge_extents(
                Extent(o, n) for o, n, f in self._walk(self._bitmap_context) if f & NBD_STATE_DIRTY
            )
        return iter(self._changed)

    # ---- data ----

    def _take(self):
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = len(self._all) - 1 < self._max
            if grow:
                return self._connect()
            return self._pool.get()

    def read(self, offset: int, length: int) -> bytes:
        if self._closed:
            raise NbdReadFailed(disk=self.name, reason="the snapshot was released")
        h = self._take()
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            parts = []
            pos = offset
            end = offset + length
            while pos < end:
                n = min(MAX_REQUEST, end - pos)
                parts.append(h.pread(n, pos))
                pos += n
            data = b"".join(parts)
        except self._nbd.Error as exc:
            raise NbdReadFailed(disk=self.name, reason=str(exc)) from exc
        finally:
            with self._lock:
                self._in_flight -= 1
            self._pool.put(h)
        with self._lock:
            self.bytes_read += len(data)
        return data

    def close(self) -> None:
        with self._lock:
            self._closed = True
            handles, self._all = self._all, []
        for h in handles:
            try:
                h.shutdown()
            except Exception:  # already gone
                pass
            try:
                h.close()
            except Exception:
                pass


class QemuNbdServer:
    """``qemu-nbd`` serving one image read-only on a unix socket (for a stopped VM's qcow2 disk)."""

    def __init__(self, image: str, fmt: str, socket_path: str, export: str, vm: str, disk: str,
                 bitmap: str | None = None):
        self.image, self.fmt, self.socket_path, self.export = image, fmt, socket_path, export
        cmd = ["qemu-nbd", "--read-only", "--persistent", "--shared=16", f"--format={fmt}",
               f"--socket={socket_path}", f"--export-name={export}"]
        if bitmap:
            cmd.append(f"--bitmap={bitmap}")
        cmd.append(image)
        Path(socket_path).unlink(missing_ok=True)
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self._listening():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                if "lock" in err.lower():
                    raise DiskInUse(name=vm, disk=disk)
                raise SnapshotFailed(name=vm, reason=f"qemu-nbd failed: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SnapshotFailed(name=vm, reason="qemu-nbd did not start within 30 s")
            time.sleep(0.02)

    def _listening(self) -> bool:
        # the socket file appears at bind(), a moment before listen(): connect to be sure
        if not os.path.exists(self.socket_path):
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._proc.stderr:
            self._proc.stderr.close()
        Path(self.socket_path).unlink(missing_ok=True)

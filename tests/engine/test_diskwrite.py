"""Restored images are written byte for byte, holes stay holes, whether the pieces go around the
page cache (O_DIRECT) or through it; direct writes leave nothing in the cache; a short write fails."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from haven.engine import diskwrite
from haven.engine.diskwrite import BLOCK, DiskWriter
from tests.services._util import require

MiB = 1 << 20
SIZE = 24 * MiB + 1234  # not a whole number of blocks: the last piece is unaligned


def _pieces() -> list[tuple[int, bytes]]:
    """Chunk-like pieces (every other MiB, so the rest are holes), one unaligned piece, the tail."""
    rng = random.Random(7)
    pieces = [(off, rng.randbytes(MiB)) for off in range(0, 22 * MiB, 2 * MiB)]
    pieces.append((22 * MiB + 100, rng.randbytes(5000)))  # unaligned offset and length
    pieces.append((24 * MiB, rng.randbytes(1234)))  # the image's last, partial block
    return pieces


def _write(path, pieces, direct: bool | None = None, monkeypatch=None) -> DiskWriter:
    if direct is False:
        monkeypatch.setattr(diskwrite, "_open_direct", lambda fd: None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        writer = DiskWriter(fd, MiB)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: writer.write(p[1], p[0]), pieces))
        writer.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    return writer


def _require_direct(ok: bool, where) -> None:
    """CI's /tmp is ext4; a developer's may be a file system without O_DIRECT."""
    require(ok, f"O_DIRECT on {where}")


def _fail_direct_writes(monkeypatch, code: int) -> tuple[dict[str, int | None], list[int]]:
    """Make every write on the writer's O_DIRECT descriptor fail with ``code``; returns that
    descriptor (once a writer is made) and the offsets refused."""
    real_pwrite, real_open_direct = os.pwrite, diskwrite._open_direct
    direct: dict[str, int | None] = {}
    refused: list[int] = []

    def open_direct(fd):
        direct["fd"] = real_open_direct(fd)
        return direct["fd"]

    def pwrite(fd, data, off):
        if fd == direct.get("fd"):
            refused.append(off)
            raise OSError(code, os.strerror(code))
        return real_pwrite(fd, data, off)

    monkeypatch.setattr(diskwrite, "_open_direct", open_direct)
    monkeypatch.setattr(diskwrite.os, "pwrite", pwrite)
    return direct, refused


def _expected(pieces) -> bytes:
    img = bytearray(SIZE)
    for off, data in pieces:
        img[off : off + len(data)] = data
    return bytes(img)


@pytest.mark.parametrize("direct", [None, False], ids=["direct-where-possible", "page-cache"])
def test_pieces_land_byte_for_byte_and_holes_stay_holes(tmp_path, monkeypatch, direct):
    pieces = _pieces()
    path = tmp_path / "disk.img"
    _write(path, pieces, direct, monkeypatch)
    assert path.read_bytes() == _expected(pieces)
    allocated = os.stat(path).st_blocks * 512
    assert allocated < 14 * MiB  # 12 MiB of data written into a 24 MiB image


def test_direct_writes_leave_the_page_cache_alone(tmp_path):
    pieces = _pieces()[:4]
    path = tmp_path / "disk.img"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        writer = DiskWriter(fd, MiB)
        _require_direct(writer.direct, tmp_path)
        for off, data in pieces:
            writer.write(data, off)
        writer.close()
    finally:
        os.close(fd)
    resident = _resident_pages(path)
    assert resident == [], f"pages in the page cache after direct writes: {resident[:8]}"


def _resident_pages(path) -> list[int]:
    """Indexes of the file's pages that are in the page cache, asked with mincore(2) on a mapping
    that is never touched. (A read with RWF_NOWAIT cannot ask: it starts read-ahead, and with the
    8 MiB read_ahead_kb of a virtio disk that read-ahead fills the pages the next question is about.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return [i for i, flags in enumerate(vec) if flags & 1]
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def test_a_short_write_is_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "disk.img"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    monkeypatch.setattr(diskwrite, "_open_direct", lambda fd: None)
    monkeypatch.setattr(diskwrite.os, "pwrite", lambda fd, data, off: 0)
    try:
        writer = DiskWriter(fd, MiB)
        with pytest.raises(OSError) as caught:
            writer.write(b"x" * 10000, 0)
        assert caught.value.errno == errno.ENOSPC
        writer.close()
    finally:
        os.close(fd)


def test_a_file_system_refusing_the_alignment_gets_the_page_cache(tmp_path, monkeypatch):
    """A device with blocks larger than 4 KiB answers EINVAL: the writer falls back, nothing is lost."""
    direct, refused = _fail_direct_writes(monkeypatch, errno.EINVAL)
    pieces = _pieces()
    path = tmp_path / "disk.img"
    writer = _write(path, pieces)
    _require_direct(direct["fd"] is not None, tmp_path)
    assert refused and not writer.direct
    assert path.read_bytes() == _expected(pieces)


def test_a_full_disk_on_the_direct_path_surfaces_as_itself(tmp_path, monkeypatch):
    """ENOSPC from an O_DIRECT write reaches the caller, and closing the writer while that error
    (whose traceback still views the aligned buffer) is alive does not replace it."""
    _fail_direct_writes(monkeypatch, errno.ENOSPC)
    fd = os.open(tmp_path / "disk.img", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer = DiskWriter(fd, MiB)
        _require_direct(writer.direct, tmp_path)
        with pytest.raises(OSError) as caught:
            writer.write(bytes(range(256)) * 4096, 0)
        assert caught.value.errno == errno.ENOSPC
        writer.close()  # with caught.value and its traceback still alive
    finally:
        os.close(fd)

"""The random-access reader of a point's disk: byte-exact reads at any offset, holes as zeros, a cache
bounded in bytes, read-ahead on sequential reads, concurrent readers, and every chunk authenticated."""

from __future__ import annotations

import io
import os
import random
import threading

import pytest

from haven.engine import LocalBackend, LocalKeyWrapper, Repository
from haven.engine.errors import ChunkCorrupt, ChunkMissing
from haven.engine.format import chunk_name
from haven.engine.reader import ChunkCache, DiskImage
from tests.engine.sources import MemorySource

MiB = 1 << 20


class CountingBackend(LocalBackend):
    def __init__(self, root):
        super().__init__(root)
        self.loads: list[str] = []
        self._l = threading.Lock()

    def load(self, name: str) -> bytes:
        with self._l:
            self.loads.append(name)
        return super().load(name)


@pytest.fixture
def stored(tmp_path):
    backend = CountingBackend(tmp_path / "vault")
    repo = Repository.init(backend, LocalKeyWrapper(b"haven-test-master-key-0123456789"), {"name": "t"})
    rnd = random.Random(7)
    segs = {0: rnd.randbytes(3 * MiB + 123), 6 * MiB: rnd.randbytes(5 * MiB), 20 * MiB - 999: rnd.randbytes(999)}
    src = MemorySource("vda", 20 * MiB, segs)
    repo.backup("vm", "p1", [src], {})
    backend.loads.clear()
    return repo, backend, src.image()


def test_reads_at_any_offset_match_the_disk(stored):
    repo, _, image = stored
    disk = DiskImage(repo, "vm", "p1", "vda")
    f = io.BufferedReader(disk.open(), 4096)
    rnd = random.Random(1)
    for _ in range(300):
        off = rnd.randrange(0, len(image) + 10)
        n = rnd.choice([0, 1, 511, 4096, MiB + 3, 3 * MiB])
        f.seek(off)
        assert f.read(n) == image[off : off + n]
    assert disk.open().read() == image
    assert f.seek(0, io.SEEK_END) == len(image)


def test_holes_read_as_zeros_without_a_fetch(stored):
    repo, backend, image = stored
    f = DiskImage(repo, "vm", "p1", "vda", read_ahead=0).open()
    f.seek(12 * MiB)
    assert f.read(2 * MiB) == bytes(2 * MiB)
    assert not [n for n in backend.loads if n.startswith("chunks/")]


def test_cache_is_bounded_in_bytes_and_least_recently_used_goes_first(stored):
    repo, backend, image = stored
    cache = ChunkCache(max_bytes=2 * MiB)
    disk = DiskImage(repo, "vm", "p1", "vda", cache=cache, read_ahead=0)
    for i in (0, 1, 2, 6, 7):
        assert disk.read_at(i * MiB, 10) == image[i * MiB : i * MiB + 10]
        assert cache.size_bytes <= 2 * MiB
    assert len(cache) == 2
    backend.loads.clear()
    disk.read_at(7 * MiB, 10)  # cached
    assert backend.loads == []
    disk.read_at(0, 10)  # evicted long ago
    assert len(backend.loads) == 1


def test_sequential_reads_fetch_ahead(stored):
    repo, backend, image = stored
    cache = ChunkCache(max_bytes=64 * MiB)
    f = DiskImage(repo, "vm", "p1", "vda", cache=cache, read_ahead=3).open()
    f.read(64 << 10)
    f.read(64 << 10)  # sequential: chunks 1..3 are fetched in the background
    deadline = threading.Event()
    for _ in range(200):
        if len(cache) >= 4:
            break
        deadline.wait(0.01)
    assert len(cache) >= 4
    cache.close()


def test_concurrent_readers_each_keep_their_position(stored):
    repo, _, image = stored
    disk = DiskImage(repo, "vm", "p1", "vda", cache=ChunkCache(max_bytes=3 * MiB))
    errors = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        f = disk.open()
        try:
            for _ in range(60):
                off = rnd.randrange(0, len(image))
                n = rnd.randrange(1, 2 * MiB)
                f.seek(off)
                if f.read(n) != image[off : off + n]:
                    errors.append((seed, off, n))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_altered_chunk_fails_authentication(stored):
    repo, backend, image = stored
    manifest = repo.load_point("vm", "p1")
    cid = manifest.disk("vda").chunks[6]
    path = backend.root / chunk_name(cid)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(raw))
    f = DiskImage(repo, "vm", "p1", "vda").open()
    assert f.read(MiB) == image[:MiB]
    f.seek(6 * MiB)
    with pytest.raises(ChunkCorrupt):
        f.read(10)


def test_a_missing_chunk_is_named(stored):
    repo, backend, _ = stored
    cid = repo.load_point("vm", "p1").disk("vda").chunks[0]
    (backend.root / chunk_name(cid)).unlink()
    with pytest.raises(ChunkMissing):
        DiskImage(repo, "vm", "p1", "vda").open().read(1)


def test_an_entry_as_a_dict_has_every_field():
    from dataclasses import asdict
    from datetime import datetime, timezone

    from haven.browse import Entry

    e = Entry("a", "/a", "symlink", 0, 0o777, 1, 2, datetime(2026, 1, 1, tzinfo=timezone.utc), "b")
    assert e.to_dict() == asdict(e)

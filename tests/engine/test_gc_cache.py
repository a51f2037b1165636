"""GC's chunk-list cache: a run reads only the manifests it has not read before (as the storage lists
them: name, size and version), a deleted point frees exactly its own chunks, and a cache entry that
is tampered with, damaged, from another vault, or older than the manifest now stored is never
trusted: GC reads the manifest instead and never deletes a chunk a recovery point references."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from haven.clock import FakeClock
from haven.engine import LocalBackend, Repository
from haven.engine.backend import ObjectInfo, WrappingBackend
from haven.engine.codec import DOMAIN_MANIFEST
from haven.engine.format import PointManifest

from .sources import MemorySource, random_disk

MiB = 1 << 20


class Counting(WrappingBackend):
    """Records every object GC loads; ``versions=False`` lists objects as a store without ETags would."""

    def __init__(self, inner, versions: bool = True):
        super().__init__(inner)
        self.loads: list[str] = []
        self.versions = versions

    def load(self, name):
        self.loads.append(name)
        return super().load(name)

    def list(self, prefix: str = ""):
        found = list(super().list(prefix))
        return iter(found if self.versions else [ObjectInfo(o.name, o.size) for o in found])

    def manifest_loads(self) -> list[str]:
        out = sorted(n for n in self.loads if n.startswith("points/"))
        self.loads.clear()
        return out


@pytest.fixture
def clock():
    return FakeClock(datetime(2024, 5, 1, tzinfo=timezone.utc))


@pytest.fixture
def counting(local_backend, kek, clock):
    Repository.init(local_backend, kek, {"name": "v"}, clock=clock)
    return Counting(local_backend)


@pytest.fixture
def crepo(counting, kek, clock):
    return Repository.open(counting, kek, clock=clock)


def _chunks(backend) -> set[str]:
    return {o.name for o in backend.list("chunks/")}


def _cache_db(repo, folder):
    return sqlite3.connect(folder / f"gc-{repo.config['vault_uuid']}.sqlite")


def _restores(repo, item, point, src: MemorySource, tmp_path) -> None:
    target = tmp_path / f"{item}-{point}.img"
    repo.restore_disk(item, point, "vda", target)
    assert target.read_bytes() == src.image()


def test_a_second_gc_over_unchanged_points_reads_no_manifest(crepo, counting, tmp_path):
    for n in range(6):
        crepo.backup(f"vm{n % 2}", f"p{n}", [random_disk("vda", MiB, seed=n, fill=1.0)], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    counting.loads.clear()
    first = crepo.gc(grace=timedelta(0), cache=cache)
    assert first.manifests_read == 6 and len(counting.manifest_loads()) == 6
    second = crepo.gc(grace=timedelta(0), cache=cache)
    assert second.manifests_read == 0 and counting.manifest_loads() == []
    assert second.points == 6 and second.chunks_referenced == 6 and second.chunks_deleted == 0
    cache.close()
    again = crepo.gc_cache(tmp_path / "cache")  # what the server does: a fresh handle on the file every run
    assert crepo.gc(grace=timedelta(0), cache=again).manifests_read == 0 and counting.manifest_loads() == []


def test_a_new_point_is_the_only_manifest_the_next_gc_reads(crepo, counting, tmp_path):
    for n in range(3):
        crepo.backup("vm", f"p{n}", [random_disk("vda", MiB, seed=n, fill=1.0)], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)
    crepo.backup("vm2", "new", [random_disk("vda", MiB, seed=9, fill=1.0)], {})
    counting.loads.clear()
    report = crepo.gc(grace=timedelta(0), cache=cache)
    assert report.manifests_read == 1 and counting.manifest_loads() == ["points/vm2/new"]


def test_deleting_a_point_frees_exactly_its_unique_chunks(crepo, counting, local_backend, tmp_path):
    x, y, z = (os.urandom(MiB) for _ in range(3))
    keep = MemorySource("vda", 2 * MiB, {0: x, MiB: y})
    gone = MemorySource("vda", 2 * MiB, {0: x, MiB: z})  # shares its first chunk with ``keep``
    crepo.backup("vm", "keep", [keep], {})
    kept = _chunks(local_backend)
    crepo.backup("vm", "gone", [gone], {})
    unique = _chunks(local_backend) - kept
    assert len(unique) == 1
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)
    crepo.delete_point("vm", "gone")
    counting.loads.clear()
    report = crepo.gc(grace=timedelta(0), cache=cache)
    assert report.manifests_read == 0 and counting.manifest_loads() == []
    assert report.chunks_deleted == 1 and _chunks(local_backend) == kept
    _restores(crepo, "vm", "keep", keep, tmp_path)
    assert crepo.verify(read_data=True).ok


def _two_points(crepo, tmp_path):
    a, b = random_disk("vda", 2 * MiB, seed=31, fill=1.0), random_disk("vda", 2 * MiB, seed=32, fill=1.0)
    crepo.backup("vm", "a", [a], {})
    crepo.backup("vm", "b", [b], {})
    cache = crepo.gc_cache(tmp_path / "cache")
    crepo.gc(grace=timedelta(0), cache=cache)
    cache.close()
    return a, b


def _tamper_ids(db, repo, tmp_path):  # b's row now lists a's chunks: trusted, it would free b's
    (blob,) = db.execute("SELECT chunks FROM manifests WHERE name = 'points/vm/a'").fetchone()
    db.execute("UPDATE manifests SET chunks = ? WHERE name = 'points/vm/b'", (blob,))


def _truncate(db, repo, tmp_path):
    db.execute("UPDATE manifests SET chunks = substr(chunks, 1, 40) WHERE name = 'points/vm/b'")


def _forge_mac(db, repo, tmp_path):  # a MAC made with a key that is not this vault's
    (blob,) = db.execute("SELECT chunks FROM manifests WHERE name = 'points/vm/a'").fetchone()
    db.execute("UPDATE manifests SET chunks = ?, mac = ? WHERE name = 'points/vm/b'", (blob, "0" * 64))


def _from_another_vault(db, repo, tmp_path):
    # another vault's genuine entry under the same name, listing that vault's chunks
    other_backend = LocalBackend(tmp_path / "other")
    other = Repository.init(other_backend, _kek(), {"name": "other"})
    other.backup("vm", "b", [random_disk("vda", MiB, seed=99, fill=1.0)], {})
    ocache = other.gc_cache(tmp_path / "other-cache")
    other.gc(grace=timedelta(0), cache=ocache)
    ocache.close()
    with _cache_db(other, tmp_path / "other-cache") as odb:
        row = odb.execute("SELECT chunks, mac, cached_at FROM manifests WHERE name = 'points/vm/b'").fetchone()
    db.execute("UPDATE manifests SET chunks = ?, mac = ?, cached_at = ? WHERE name = 'points/vm/b'", row)


def _kek():
    from haven.engine import LocalKeyWrapper

    return LocalKeyWrapper(b"another-master-key-0123456789abc")


@pytest.mark.parametrize("tamper", [_tamper_ids, _truncate, _forge_mac, _from_another_vault],
                         ids=["ids-swapped", "truncated", "forged-mac", "another-vault"])
def test_a_tampered_or_damaged_cache_entry_is_not_trusted(crepo, counting, local_backend, tmp_path, tamper):
    a, b = _two_points(crepo, tmp_path)
    stored = _chunks(local_backend)
    with _cache_db(crepo, tmp_path / "cache") as db:
        tamper(db, crepo, tmp_path)
    cache = crepo.gc_cache(tmp_path / "cache")
    counting.loads.clear()
    report = crepo.gc(grace=timedelta(0), cache=cache)
    assert report.manifests_read == 1 and counting.manifest_loads() == ["points/vm/b"]
    assert report.chunks_deleted == 0 and _chunks(local_backend) == stored
    _restores(crepo, "vm", "b", b, tmp_path)
    # the entry GC wrote from the manifest is good again
    assert crepo.gc(grace=timedelta(0), cache=cache).manifests_read == 0


def _same_size_rewrite(repo, item: str, point: str, disks_from: str) -> None:
    """Rewrite ``item/point`` in place (as a repair would) to reference the disks of ``disks_from``,
    padded so that the stored object keeps exactly its size."""
    size = next(o.size for o in repo.backend.list(f"points/{item}/{point}"))
    old, donor = repo.load_point(item, point), repo.load_point(item, disks_from)
    for n in range(4000):  # the stats give way to a padding of some length
        new = PointManifest(item, point, old.created, old.meta, donor.disks, old.parent_point_id,
                            {"repaired": os.urandom(200).hex()[: n % 400]})
        if len(repo.codec.seal(DOMAIN_MANIFEST, f"{item}/{point}".encode(), new.to_bytes())) == size:
            repo.write_point(new)
            assert next(o.size for o in repo.backend.list(f"points/{item}/{point}")) == size
            return
    raise AssertionError("no padding gives the same size")


def test_a_manifest_rewritten_in_place_with_the_same_size_is_read_again(crepo, counting, local_backend, tmp_path):
    a, b = _two_points(crepo, tmp_path)
    _same_size_rewrite(crepo, "vm", "a", disks_from="b")  # "a" now holds b's data
    crepo.delete_point("vm", "b")  # b's chunks stay referenced, by "a"
    cache = crepo.gc_cache(tmp_path / "cache")
    counting.loads.clear()
    report = crepo.gc(grace=timedelta(0), cache=cache)
    assert counting.manifest_loads() == ["points/vm/a"]
    assert report.chunks_deleted == 2  # a's former chunks, and only those
    _restores(crepo, "vm", "a", b, tmp_path)
    assert crepo.verify(read_data=True).ok


def test_a_store_that_lists_no_versions_has_every_manifest_read(local_backend, kek, clock, tmp_path):
    Repository.init(local_backend, kek, {"name": "v"}, clock=clock)
    plain = Counting(local_backend, versions=False)
    repo = Repository.open(plain, kek, clock=clock)
    for n in range(2):
        repo.backup("vm", f"p{n}", [random_disk("vda", MiB, seed=n, fill=1.0)], {})
    cache = repo.gc_cache(tmp_path / "cache")
    repo.gc(grace=timedelta(0), cache=cache)
    plain.loads.clear()
    assert repo.gc(grace=timedelta(0), cache=cache).manifests_read == 2
    assert plain.manifest_loads() == ["points/vm/p0", "points/vm/p1"]


class RewriteBeforeSweep(Counting):
    """Runs ``action`` once, when GC stores ``gc/pending``: after it decided, before its sweep."""

    def __init__(self, inner):
        super().__init__(inner)
        self.action = None

    def store(self, name, data):
        super().store(name, data)
        if name == "gc/pending" and self.action is not None:
            action, self.action = self.action, None
            action()


def test_a_manifest_rewritten_while_gc_decides_is_read_again_in_the_second_look(local_backend, kek, clock, tmp_path):
    Repository.init(local_backend, kek, {"name": "v"}, clock=clock)
    hooked = RewriteBeforeSweep(local_backend)
    repo = Repository.open(hooked, kek, clock=clock)
    a, b = _two_points(repo, tmp_path)
    cache = repo.gc_cache(tmp_path / "cache")
    plain = Repository.open(local_backend, kek, clock=clock)
    donor = plain.load_point("vm", "b")
    plain.delete_point("vm", "b")  # b's chunks are due in the next run...

    def repair():  # ...but "a" is rewritten to reference them before the sweep starts
        old = plain.load_point("vm", "a")
        plain.write_point(PointManifest("vm", "a", old.created, old.meta, donor.disks, None, {"repaired": True}))

    hooked.action = repair
    hooked.loads.clear()
    report = repo.gc(grace=timedelta(0), cache=cache)
    assert hooked.action is None and hooked.manifest_loads() == ["points/vm/a"]
    assert report.chunks_deleted == 0
    _restores(plain, "vm", "a", b, tmp_path)
    assert plain.verify(read_data=True).ok

"""Verify names affected points, quarantines and heals; GC never deletes what it must not."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from haven.clock import FakeClock
from haven.engine import LocalBackend, Repository
from haven.engine.errors import RepositoryLocked
from haven.engine.locks import Lock
from haven.errors import HavenError

from .faulty import Fault, FaultyBackend
from .sources import random_disk

MiB = 1 << 20


@pytest.fixture
def clock():
    return FakeClock(datetime(2024, 5, 1, tzinfo=timezone.utc))


@pytest.fixture
def crepo(local_backend, kek, clock):
    return Repository.init(local_backend, kek, {"name": "v"}, clock=clock)


def _flip(backend: LocalBackend, name: str, rng: random.Random) -> None:
    path = backend.root / name
    raw = bytearray(path.read_bytes())
    bit = rng.randrange(len(raw) * 8)
    raw[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(raw))


def test_verify_finds_every_flipped_bit_and_heals(crepo, local_backend, tmp_path):
    a = random_disk("vda", 6 * MiB, seed=1, fill=1.0)
    crepo.backup("vm-a", "p1", [a], {})
    b = a.with_changes({0: b"x" * 10})
    crepo.backup("vm-a", "p2", [b], {}, parent_point_id="p1")
    crepo.backup("vm-b", "p1", [a], {})
    assert crepo.verify(read_data=True).ok
    rng = random.Random(3)
    chunks = sorted(o.name for o in local_backend.list("chunks/"))
    bad = rng.sample(chunks, 3)
    for name in bad:
        _flip(local_backend, name, rng)
    structural = crepo.verify()
    assert structural.ok  # structure alone cannot see flipped bits
    report = crepo.verify(read_data=True)
    assert not report.ok
    assert sorted(report.corrupt) == sorted(n.rsplit("/", 1)[1] for n in bad)
    assert report.quarantined == report.corrupt
    assert ("vm-b", "p1") in report.affected and len(report.affected) >= 2
    assert len(list(local_backend.list("quarantine/"))) == 3
    # now they are missing; structure check names the affected points
    after = crepo.verify()
    assert sorted(after.missing) == sorted(report.corrupt) and after.affected == report.affected
    # the next backup that meets the data stores it again (even as an incremental from a parent)
    s = crepo.backup("vm-a", "p3", [a], {}, parent_point_id="p1")
    s2 = crepo.backup("vm-a", "p4", [b.with_changes({}, report_changed=False)], {}, parent_point_id="p3")
    assert s.chunks_new + s2.chunks_new == 3
    healed = crepo.verify(read_data=True)
    assert healed.ok, healed
    crepo.restore_disk("vm-a", "p1", "vda", tmp_path / "p1.img")
    assert (tmp_path / "p1.img").read_bytes() == a.image()


def test_incremental_heals_quarantined_parent_chunk(crepo, local_backend, tmp_path):
    from haven.engine import Extent

    base = random_disk("vda", 4 * MiB, seed=2, fill=1.0)
    crepo.backup("vm", "p1", [base], {})
    from haven.engine.format import chunk_name

    name = chunk_name(crepo.load_point("vm", "p1").disks[0].chunks[2])  # a chunk p2 leaves unchanged
    local_backend.delete(name)
    nxt = base.with_changes({0: b"x"})
    nxt._changed = [Extent(0, 1)]
    crepo.backup("vm", "p2", [nxt], {}, parent_point_id="p1")
    crepo.restore_disk("vm", "p2", "vda", tmp_path / "p2.img")
    assert (tmp_path / "p2.img").read_bytes() == nxt.image()
    assert local_backend.exists(name) and crepo.verify().ok


def test_verify_subset_covers_everything(crepo, local_backend):
    crepo.backup("vm", "p1", [random_disk("vda", 8 * MiB, seed=4, fill=1.0)], {})
    total = len(list(local_backend.list("chunks/")))
    parts = [crepo.verify(read_data=True, subset=f"{n}/3").chunks_read for n in (1, 2, 3)]
    assert sum(parts) == total
    assert crepo.verify(read_data=True, subset="100%").chunks_read == total
    with pytest.raises(HavenError):
        crepo.verify(read_data=True, subset="4/3")


def test_verify_reports_unreadable_manifest(crepo, local_backend):
    crepo.backup("vm", "p1", [random_disk("vda", MiB, 1)], {})
    crepo.backup("vm", "p2", [random_disk("vda", MiB, 2)], {})
    _flip(local_backend, "points/vm/p2", random.Random(1))
    report = crepo.verify()
    assert not report.ok and report.affected == [("vm", "p2")]


def test_gc_deletes_only_unreferenced(crepo, local_backend, tmp_path):
    a = random_disk("vda", 4 * MiB, seed=5, fill=1.0)
    b = a.with_changes({0: b"changed"}, report_changed=False)
    crepo.backup("vm", "p1", [a], {})
    crepo.backup("vm", "p2", [b], {})
    crepo.delete_point("vm", "p1")
    report = crepo.gc(grace=timedelta(0))
    assert report.chunks_deleted == 1 and report.bytes_deleted > 0
    assert crepo.verify(read_data=True).ok
    crepo.restore_disk("vm", "p2", "vda", tmp_path / "p2.img")
    assert (tmp_path / "p2.img").read_bytes() == b.image()


def test_gc_refuses_an_empty_vault_nobody_vouched_for(crepo):
    from haven.engine.errors import GcRefused

    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=8, fill=1.0)], {})
    crepo.delete_point("vm", "p1")
    with pytest.raises(GcRefused):  # no point listed, chunks stored: a listing that may lie
        crepo.gc(grace=timedelta(0))
    assert crepo.gc(grace=timedelta(0), expected_points=set()).chunks_deleted == 2  # the caller vouches: empty


def test_gc_refuses_when_a_known_point_is_not_listed(crepo):
    from haven.engine.errors import GcRefused

    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=9, fill=1.0)], {})
    with pytest.raises(GcRefused):
        crepo.gc(grace=timedelta(0), expected_points={("vm", "p1"), ("vm", "p-missing")})
    assert crepo.verify(read_data=True).ok


def test_gc_grace_period(crepo, clock):
    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=6, fill=1.0)], {})
    crepo.delete_point("vm", "p1")
    first = crepo.gc(grace=timedelta(hours=1), expected_points=set())
    assert first.chunks_deleted == 0 and first.chunks_pending == 2
    clock.advance(timedelta(minutes=30))
    assert crepo.gc(grace=timedelta(hours=1), expected_points=set()).chunks_deleted == 0
    clock.advance(timedelta(minutes=31))
    assert crepo.gc(grace=timedelta(hours=1), expected_points=set()).chunks_deleted == 2


def test_gc_keeps_what_a_running_backup_may_have_stored(crepo, local_backend, clock):
    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=7, fill=1.0)], {})
    crepo.delete_point("vm", "p1")
    held = Lock(local_backend, clock, "backup").acquire()  # started before GC first saw p1's chunks
    report = crepo.gc(grace=timedelta(0), expected_points=set())
    assert report.chunks_deleted == 0 and report.chunks_pending == 2 and report.writers == 1
    assert len(list(local_backend.list("chunks/"))) == 2
    held.release()
    # a lock left by a crashed process expires
    Lock(local_backend, clock, "backup").acquire()
    clock.advance(timedelta(hours=1))
    assert crepo.gc(grace=timedelta(0), expected_points=set()).chunks_deleted == 2


def test_backup_runs_while_a_gc_lock_is_held(crepo, local_backend, clock, tmp_path):
    Lock(local_backend, clock, "gc").acquire(conflicts=("gc",))  # a GC reading (phase mark)
    src = random_disk("vda", MiB, 1)
    crepo.backup("vm", "p1", [src], {})
    crepo.restore_disk("vm", "p1", "vda", tmp_path / "p1.img")
    assert (tmp_path / "p1.img").read_bytes() == src.image()


@pytest.mark.parametrize("fault", [
    Fault("list_fail", prefix="chunks/"),
    Fault("list_fail", prefix="points/"),
    Fault("error", ops=("load",), prefix="points/"),
    Fault("bitflip", prefix="points/vm/p2"),
    Fault("truncate", prefix="points/"),
])
def test_gc_deletes_nothing_when_a_read_fails(crepo, local_backend, kek, clock, fault):
    crepo.backup("vm", "p1", [random_disk("vda", 2 * MiB, seed=8, fill=1.0)], {})
    crepo.backup("vm", "p2", [random_disk("vda", 2 * MiB, seed=9, fill=1.0)], {})
    crepo.delete_point("vm", "p1")
    before = sorted(o.name for o in local_backend.list("chunks/"))
    faulty = Repository.open(FaultyBackend(local_backend, [fault]), kek, clock=clock)
    with pytest.raises(HavenError):
        faulty.gc(grace=timedelta(0))
    assert sorted(o.name for o in local_backend.list("chunks/")) == before
    assert crepo.gc(grace=timedelta(0)).chunks_deleted == 2

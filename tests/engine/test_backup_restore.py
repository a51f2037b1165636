"""Backups and restores on a local folder: byte-identical, sparse, deduplicated, incremental."""

from __future__ import annotations

import os
import threading

import pytest

from haven.engine import Extent, RawFileSource, Repository
from haven.engine.errors import (
    BackupCancelled,
    DiskNotFound,
    RecoveryPointExists,
    RecoveryPointNotFound,
    RepositoryKeyMismatch,
    RepositoryNotInitialised,
)
from haven.engine import LocalKeyWrapper

from tests.services._util import require_binary

from .sources import MemorySource, random_disk

MiB = 1 << 20


def restore_bytes(repo, tmp_path, item, point, disk="vda"):
    out = tmp_path / f"{item}-{point}-{disk}.img"
    repo.restore_disk(item, point, disk, out)
    return out.read_bytes()


def test_zero_byte_disk(repo, tmp_path):
    src = MemorySource("vda", 0)
    s = repo.backup("vm", "p1", [src], {})
    assert s.chunks_total == 0 and s.bytes_new == 0
    assert restore_bytes(repo, tmp_path, "vm", "p1") == b""


def test_size_not_multiple_of_chunk(repo, tmp_path):
    src = random_disk("vda", 5 * MiB + 4097, seed=1, fill=0.9)
    repo.backup("vm", "p1", [src], {})
    assert restore_bytes(repo, tmp_path, "vm", "p1") == src.image()


def test_sparse_large_disk_reads_only_data(repo, tmp_path):
    size = 8 << 30  # 8 GiB virtual, 3 MiB of data
    segs = {0: b"boot" * 1024, 3 << 30: os.urandom(2 * MiB), (8 << 30) - 4096: b"\x01" * 4096}
    src = MemorySource("vda", size, segs)
    s = repo.backup("vm", "p1", [src], {})
    assert src.bytes_read() == 4096 + 2 * MiB + 4096
    assert s.chunks_total == 8192 and s.chunks_zero == 8192 - 4
    out = tmp_path / "big.img"
    repo.restore_disk("vm", "p1", "vda", out)
    assert out.stat().st_size == size
    assert out.stat().st_blocks * 512 < 16 * MiB  # holes stayed holes
    reader = repo.open_disk_reader("vm", "p1", "vda")
    for off, data in segs.items():
        assert reader.read(off, len(data)) == data
    assert reader.read(1 << 30, 100) == bytes(100)


def test_zero_chunks_never_stored(repo, local_backend):
    src = MemorySource("vda", 4 * MiB, {0: bytes(2 * MiB), 3 * MiB: b"a" * MiB})
    s = repo.backup("vm", "p1", [src], {})
    assert s.chunks_new == 1
    assert len(list(local_backend.list("chunks/"))) == 1


def test_multiple_disks_and_meta_roundtrip(repo, tmp_path, local_backend, kek):
    a, b = random_disk("vda", 2 * MiB, 2), random_disk("vdb", MiB + 1, 3)
    meta = {"vm": {"name": "web", "xml": "<domain/>"}, "consistency": "crash"}
    repo.backup("vm", "p1", [a, b], meta)
    fresh = Repository.open(local_backend, kek)  # a new server: storage + key only
    point = fresh.load_point("vm", "p1")
    assert point.meta == meta
    assert [(d.name, d.size) for d in point.disks] == [("vda", 2 * MiB), ("vdb", MiB + 1)]
    assert restore_bytes(fresh, tmp_path, "vm", "p1", "vdb") == b.image()
    with pytest.raises(DiskNotFound):
        fresh.restore_disk("vm", "p1", "vdc", tmp_path / "x")


def test_dedup_across_items(repo):
    a = random_disk("vda", 6 * MiB, seed=7, fill=1.0)
    s1 = repo.backup("vm-a", "p1", [a], {})
    clone = a.with_changes({MiB: b"Z" * 4096}, report_changed=False)
    s2 = repo.backup("vm-b", "p1", [clone], {})
    assert s1.chunks_new == 6
    assert s2.chunks_new == 1
    assert repo.list_items() == ["vm-a", "vm-b"]


def test_incremental_reads_only_changed_ranges(repo, tmp_path):
    base = random_disk("vda", 16 * MiB, seed=9, fill=0.8)
    repo.backup("vm", "p1", [base], {})
    changes = {5 * MiB + 100: b"c" * 5000, 12 * MiB: os.urandom(MiB)}
    nxt = base.with_changes(changes)
    s = repo.backup("vm", "p2", [nxt], {}, parent_point_id="p1")
    read_chunks = {off // MiB for off, _ in nxt.reads}
    assert read_chunks == {5, 12}
    assert s.chunks_reused == sum(1 for i in range(16) if i not in (5, 12)) - s.chunks_zero
    assert restore_bytes(repo, tmp_path, "vm", "p2") == nxt.image()
    assert restore_bytes(repo, tmp_path, "vm", "p1") == base.image()


def test_incremental_without_bitmap_full_compare(repo, tmp_path):
    base = random_disk("vda", 8 * MiB, seed=11, fill=1.0)
    repo.backup("vm", "p1", [base], {})
    nxt = base.with_changes({3 * MiB: b"q" * 100}, report_changed=False)
    s = repo.backup("vm", "p2", [nxt], {}, parent_point_id="p1")
    assert nxt.bytes_read() == 8 * MiB  # everything read (no bitmap)...
    assert s.chunks_new == 1  # ...but only the changed chunk stored
    assert restore_bytes(repo, tmp_path, "vm", "p2") == nxt.image()


def test_incremental_disk_grew(repo, tmp_path):
    base = random_disk("vda", 3 * MiB + 10, seed=12, fill=1.0)
    repo.backup("vm", "p1", [base], {})
    grown = MemorySource("vda", 5 * MiB, dict(base.segments) | {4 * MiB: b"g" * 10}, changed=[Extent(4 * MiB, 10)])
    repo.backup("vm", "p2", [grown], {}, parent_point_id="p1")
    assert restore_bytes(repo, tmp_path, "vm", "p2") == grown.image()


def test_wrong_key_fails_closed(repo, local_backend):
    with pytest.raises(RepositoryKeyMismatch):
        Repository.open(local_backend, LocalKeyWrapper(b"another-master-key-0000000000000"))


def test_open_empty_storage(tmp_path, kek):
    from haven.engine import LocalBackend

    with pytest.raises(RepositoryNotInitialised):
        Repository.open(LocalBackend(tmp_path / "empty"), kek)


def test_tampered_chunk_detected(repo, local_backend, tmp_path):
    from haven.engine.errors import ChunkCorrupt

    src = random_disk("vda", 2 * MiB, seed=3, fill=1.0)
    repo.backup("vm", "p1", [src], {})
    obj = next(iter(local_backend.list("chunks/")))
    path = local_backend.root / obj.name
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkCorrupt):
        repo.restore_disk("vm", "p1", "vda", tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()


def test_swapped_chunks_detected(repo, local_backend, tmp_path):
    from haven.engine.errors import ChunkCorrupt

    src = random_disk("vda", 2 * MiB, seed=4, fill=1.0)
    repo.backup("vm", "p1", [src], {})
    a, b = [local_backend.root / o.name for o in local_backend.list("chunks/")]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    with pytest.raises(ChunkCorrupt):
        repo.restore_disk("vm", "p1", "vda", tmp_path / "out.img")


def test_tampered_manifest_and_config(repo, local_backend):
    from haven.engine.errors import ObjectCorrupt

    repo.backup("vm", "p1", [random_disk("vda", MiB, 1)], {})
    path = local_backend.root / "points/vm/p1"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ObjectCorrupt):
        repo.load_point("vm", "p1")
    cfg = local_backend.root / "config"
    cfg.write_text(cfg.read_text().replace('"chunk_size": 1048576', '"chunk_size": 4096'))
    with pytest.raises(ObjectCorrupt):
        Repository.open(local_backend, LocalKeyWrapper(b"haven-test-master-key-0123456789"))


def test_manifest_moved_to_another_point_fails(repo, local_backend):
    from haven.engine.errors import ObjectCorrupt

    repo.backup("vm", "p1", [random_disk("vda", MiB, 1)], {})
    (local_backend.root / "points/vm/p2").write_bytes((local_backend.root / "points/vm/p1").read_bytes())
    with pytest.raises(ObjectCorrupt):
        repo.load_point("vm", "p2")


def test_cancel_records_nothing(repo):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BackupCancelled):
        repo.backup("vm", "p1", [random_disk("vda", 4 * MiB, 1)], {}, cancel=cancel)
    assert repo.list_items() == []


def test_point_ids_unique_and_checked(repo):
    repo.backup("vm", "p1", [random_disk("vda", MiB, 1)], {})
    with pytest.raises(RecoveryPointExists):
        repo.backup("vm", "p1", [random_disk("vda", MiB, 1)], {})
    with pytest.raises(RecoveryPointNotFound):
        repo.load_point("vm", "nope")
    with pytest.raises(RecoveryPointNotFound):
        repo.backup("vm", "p2", [random_disk("vda", MiB, 1)], {}, parent_point_id="nope")


def test_list_and_delete_points(repo):
    for p in ("p1", "p2", "p3"):
        repo.backup("vm", p, [random_disk("vda", MiB, 1)], {"n": p})
    assert [p.point_id for p in repo.list_points("vm")] == ["p1", "p2", "p3"]
    repo.delete_point("vm", "p2")
    assert [p.point_id for p in repo.list_points("vm")] == ["p1", "p3"]
    with pytest.raises(RecoveryPointNotFound):
        repo.delete_point("vm", "p2")


def test_raw_file_source_and_qcow2_restore(repo, tmp_path):
    import subprocess

    img = tmp_path / "disk.img"
    with open(img, "wb") as fh:
        fh.truncate(10 * MiB)
        fh.seek(MiB)
        fh.write(os.urandom(300_000))
        fh.seek(7 * MiB + 5)
        fh.write(b"tail" * 1000)
    with RawFileSource(img, name="vda") as src:
        extents = list(src.data_extents())
        assert sum(e.length for e in extents) < 3 * MiB
        repo.backup("vm", "p1", [src], {})
    out = tmp_path / "restored.img"
    repo.restore_disk("vm", "p1", "vda", out)
    assert out.read_bytes() == img.read_bytes()
    require_binary("qemu-img")
    q = tmp_path / "restored.qcow2"
    repo.restore_disk("vm", "p1", "vda", q, fmt="qcow2")
    res = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(q), str(img)], capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_progress_reported(repo):
    seen = []

    class P:
        def update(self, done, total=None, phase=None):
            seen.append((done, total, phase))

    repo.backup("vm", "p1", [random_disk("vda", 3 * MiB, 1)], {}, progress=P())
    assert seen[-1][0] == seen[-1][1] == 3 * MiB

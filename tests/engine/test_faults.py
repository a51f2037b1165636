"""Under every fault the injector makes, a backup completes with all data present, or fails typed
and records nothing. Also: retry behaviour."""

from __future__ import annotations

import pytest

from haven.engine import Fault, FaultyBackend, LocalBackend, LocalKeyWrapper, Repository, RetryingBackend
from haven.engine.errors import StorageRequestRejected, StorageUnavailable
from haven.engine.faults import FAULT_KINDS
from haven.errors import HavenError

from .sources import random_disk

MiB = 1 << 20
KEK = LocalKeyWrapper(b"fault-injection-master-key-00000")


def _outcome(tmp_path, kind: str, seed: int, rate: float):
    inner = LocalBackend(tmp_path / f"vault-{kind}-{seed}")
    Repository.init(inner, KEK, {"name": "faults"})
    faulty = FaultyBackend(inner, [Fault(kind, rate=rate)], seed=seed)
    backend = RetryingBackend(faulty, attempts=3, sleep=lambda s: None)
    src = random_disk("vda", 6 * MiB + 123, seed=seed, fill=0.9)
    try:
        repo = Repository.open(backend, KEK)
        repo.backup("vm", "p1", [src], {"k": kind})
        completed = True
    except HavenError as exc:
        completed = False
        err = exc
    clean = Repository.open(inner, KEK)
    if completed:
        # all data present: restore through the clean backend, and verify reads every chunk
        out = tmp_path / f"out-{kind}-{seed}.img"
        clean.restore_disk("vm", "p1", "vda", out)
        assert out.read_bytes() == src.image()
        assert clean.verify(read_data=True).ok
    else:
        assert isinstance(err, HavenError) and err.code
        assert clean.list_items() == [], f"a failed backup recorded a point ({err})"
    return completed, faulty.injected.get(kind, 0)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_backup_under_fault(tmp_path, kind):
    outcomes = [_outcome(tmp_path, kind, seed, rate) for seed, rate in [(1, 0.05), (2, 0.2), (3, 0.5)]]
    assert sum(n for _, n in outcomes) > 0, "the fault was never injected"


def test_lost_writes_are_repaired(tmp_path):
    completed, injected = _outcome(tmp_path, "lost_write", 7, 0.2)
    assert completed and injected > 0


def test_transient_errors_are_retried(tmp_path):
    completed, injected = _outcome(tmp_path, "error", 8, 0.1)
    assert completed and injected > 0


def test_every_fault_always_fails_typed(tmp_path):
    for kind in FAULT_KINDS:
        completed, _ = _outcome(tmp_path, kind, 9, 1.0)
        if kind not in ("bitflip", "truncate"):  # loads that always corrupt can never succeed either
            assert not completed, kind


def test_retry_stops_on_permanent_and_is_bounded(tmp_path):
    inner = LocalBackend(tmp_path / "v")
    inner.prepare()
    sleeps = []
    faulty = FaultyBackend(inner, [Fault("permanent", ops=("store",))])
    with pytest.raises(StorageRequestRejected):
        RetryingBackend(faulty, attempts=5, sleep=sleeps.append).store("a", b"1")
    assert sleeps == []
    faulty = FaultyBackend(inner, [Fault("error", ops=("store",))])
    retry = RetryingBackend(faulty, attempts=4, base_delay=0.1, max_delay=0.3, sleep=sleeps.append)
    with pytest.raises(StorageUnavailable):
        retry.store("a", b"1")
    assert len(sleeps) == 3 and max(sleeps) <= 0.3
    faulty = FaultyBackend(inner, [Fault("error", nth=1)])
    RetryingBackend(faulty, attempts=2, sleep=lambda s: None).store("a", b"2")
    assert inner.load("a") == b"2"


def test_fault_injector_kinds(tmp_path):
    inner = LocalBackend(tmp_path / "v")
    inner.prepare()
    inner.store("x", b"0123456789")
    assert len(FaultyBackend(inner, [Fault("truncate")]).load("x")) < 10
    flipped = FaultyBackend(inner, [Fault("bitflip")]).load("x")
    assert len(flipped) == 10 and flipped != b"0123456789"
    FaultyBackend(inner, [Fault("lost_write")]).store("y", b"1")
    assert not inner.exists("y")
    with pytest.raises(StorageUnavailable):
        list(FaultyBackend(inner, [Fault("list_fail")]).list(""))

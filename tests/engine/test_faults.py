"""Under every fault the injector makes, a backup completes with all data present, or fails typed
and records nothing. Also: retry behaviour."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from haven.engine import LocalBackend, LocalKeyWrapper, Repository, RetryingBackend
from haven.engine.errors import StorageRequestRejected, StorageUnavailable
from haven.errors import HavenError

from .faulty import FAULT_KINDS, Fault, FaultyBackend
from .sources import random_disk

MiB = 1 << 20
KEK = LocalKeyWrapper(b"fault-injection-master-key-00000")


def _outcome(tmp_path, kind: str, seed: int, rate: float):
    inner = LocalBackend(tmp_path / f"vault-{kind}-{seed}")
    Repository.init(inner, KEK, {"name": "faults"})
    faulty = FaultyBackend(inner, [Fault(kind, rate=rate, optional=rate < 1)], seed=seed)  # the callers count what fired
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


def test_the_injector_is_not_in_the_product():
    import haven.engine

    src = Path(haven.engine.__file__).parents[1]
    assert importlib.util.find_spec("haven.engine.faults") is None and not hasattr(haven.engine, "FaultyBackend")
    assert not [p for p in src.rglob("*.py") if "FaultyBackend" in p.read_text() or "engine.faulty" in p.read_text()]


def test_the_fault_check_is_on_here(request):
    assert "faults_exercised" in request.fixturenames


def test_a_planned_fault_that_never_fires_fails_its_test(tmp_path):
    """As kopia's VerifyAllFaultsExercised: a test whose planned fault never fires fails; one whose faults
    all fired passes, and so does one whose fault is marked optional."""
    (tmp_path / "conftest.py").write_text("from tests.engine.faulty import faults_exercised  # noqa: F401\n")
    (tmp_path / "test_plans.py").write_text(textwrap.dedent('''
        from haven.engine import LocalBackend
        from tests.engine.faulty import Fault, FaultyBackend

        def test_fires(tmp_path):
            faulty = FaultyBackend(LocalBackend(tmp_path / "v"), [Fault("lost_write")])
            faulty.prepare()
            faulty.store("a", b"1")

        def test_never_fires(tmp_path):
            faulty = FaultyBackend(LocalBackend(tmp_path / "v"), [Fault("lost_write"), Fault("bitflip", prefix="chunks/")])
            faulty.prepare()
            faulty.store("a", b"1")

        def test_optional_never_fires(tmp_path):
            FaultyBackend(LocalBackend(tmp_path / "v"), [Fault("error", rate=0.0, optional=True)]).prepare()
    '''))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, COLUMNS="1000",
               PYTHONPATH=os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 1, out
    assert "PASSED test_plans.py::test_fires" in out and "PASSED test_plans.py::test_optional_never_fires" in out, out
    assert "ERROR test_plans.py::test_never_fires - Failed: planned faults never fired: Fault(kind='bitflip'" in out, out
    assert "kind='lost_write'" not in out.split("planned faults never fired:", 1)[1].splitlines()[0], out

"""Item 2 — storage faults at 1%, 5% and 20% of every kind the injector makes (errors, permanent
rejections, time-outs, truncated and bit-flipped reads, lost writes, failing listings) plus
connection resets and listings that come back empty, on the local folder and on Azure Blob
(Azurite), and in full form also on S3 and Haven's storage endpoint.

- a backup either completes with every byte restorable through a clean backend, or fails with a
  typed error and leaves no recovery point: no point with missing data;
- retries are bounded: at most ``attempts - 1`` retries per logical call;
- GC after a failed or empty listing deletes nothing live.
"""

from __future__ import annotations

import itertools
import zlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from haven.clock import FakeClock
from haven.engine.errors import GcRefused
from haven.engine import Backend, Repository, RetryingBackend, open_backend
from haven.errors import HavenError

from .conftest import FULL, KEK, MiB, report, size

try:
    from tests.engine.conftest import TOKEN, haven_endpoint  # noqa: F401
    from tests.engine.faulty import FAULT_KINDS, Fault, FaultyBackend
    from tests.services.azurite import azurite  # noqa: F401
    from tests.services.s3 import s3_server  # noqa: F401
except ImportError:  # pragma: no cover
    raise

RATES = (0.01, 0.05, 0.20)
KINDS = (*FAULT_KINDS, "reset", "empty_list")
BACKENDS = ("local", "azure", "s3", "haven") if FULL else ("local", "azure")
ATTEMPTS = 4
_n = itertools.count()


class Extra(Backend):
    """Faults the injector lacks: a reset connection (ConnectionResetError, transient) and a
    listing that comes back empty without an error."""

    def __init__(self, inner: Backend, kind: str, rate: float, seed: int):
        import random

        self.inner, self.kind, self.rate, self.rng = inner, kind, rate, random.Random(seed)
        self.location, self.injected = inner.location, 0

    def _hit(self) -> bool:
        if self.rng.random() < self.rate:
            self.injected += 1
            return True
        return False

    def prepare(self): self.inner.prepare()
    def close(self): self.inner.close()

    def is_permanent(self, exc):
        return False if isinstance(exc, ConnectionResetError) else self.inner.is_permanent(exc)

    def _maybe_reset(self):
        if self.kind == "reset" and self._hit():
            raise ConnectionResetError(104, "Connection reset by peer (injected)")

    def store(self, name, data):
        self._maybe_reset()
        self.inner.store(name, data)

    def load(self, name):
        self._maybe_reset()
        return self.inner.load(name)

    def exists(self, name):
        self._maybe_reset()
        return self.inner.exists(name)

    def delete(self, name):
        self._maybe_reset()
        self.inner.delete(name)

    def list(self, prefix="") -> Iterator:
        self._maybe_reset()
        if self.kind == "empty_list" and self._hit():
            return iter(())
        return self.inner.list(prefix)


class Counting(Backend):
    """Counts logical calls (above the retry layer)."""

    def __init__(self, inner):
        self.inner, self.location, self.calls = inner, inner.location, 0

    def prepare(self): self.inner.prepare()
    def close(self): self.inner.close()
    def is_permanent(self, exc): return self.inner.is_permanent(exc)

    def _c(self, fn):
        self.calls += 1
        return fn()

    def store(self, n, d): return self._c(lambda: self.inner.store(n, d))
    def load(self, n): return self._c(lambda: self.inner.load(n))
    def exists(self, n): return self._c(lambda: self.inner.exists(n))
    def delete(self, n): return self._c(lambda: self.inner.delete(n))
    def list(self, p=""): return self._c(lambda: self.inner.list(p))


def _raw_backend(kind: str, request, tmp_path) -> Backend:
    unique = f"r{next(_n)}-{uuid.uuid4().hex[:8]}"
    if kind == "local":
        b = open_backend(f"file://{tmp_path}/{unique}", retry=False, fsync=False)
    elif kind == "azure":
        b = open_backend(f"azure://{unique}", retry=False, connection_string=request.getfixturevalue("azurite"))
    elif kind == "s3":
        b = open_backend(f"s3://{unique}/vault", retry=False, **request.getfixturevalue("s3_server"))
    else:
        base = request.getfixturevalue("haven_endpoint").replace("http://", "haven+http://")
        b = open_backend(f"{base}/v-{unique}", retry=False, token=TOKEN)
    b.prepare()
    return b


def _disk(seed: int):
    from tests.engine.sources import random_disk

    return random_disk("vda", 3 * MiB + 4321, seed=seed, fill=0.9)


def test_the_fault_check_is_on_here(request):
    assert "faults_exercised" in request.fixturenames


@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_backup_under_storage_faults(backend_kind, request, tmp_path):
    figures = {"backups": 0, "completed": 0, "failed_typed": 0, "faults_injected": 0, "retries": 0, "data_lost": 0}
    rounds = size("fault_rounds")
    for kind, rate, rnd in itertools.product(KINDS, RATES, range(rounds)):
        seed = zlib.crc32(f"{kind}/{rate}/{rnd}".encode()) & 0xFFFF
        raw = _raw_backend(backend_kind, request, tmp_path)
        Repository.init(raw, KEK, {"name": "faults"}, chunk_size=64 << 10)
        if kind in FAULT_KINDS:
            faulty = FaultyBackend(raw, [Fault(kind, rate=rate, delay=0.001, optional=True)], seed=seed)  # counted below
        else:
            faulty = Extra(raw, kind, rate, seed)
        retrying = RetryingBackend(faulty, attempts=ATTEMPTS, base_delay=0.0, sleep=lambda s: None)
        counting = Counting(retrying)
        src = _disk(seed)
        figures["backups"] += 1
        try:
            repo = Repository.open(counting, KEK)
            repo.backup("vm", "p1", [src], {"kind": kind})
            ok = True
        except HavenError as exc:
            ok, err = False, exc
        injected = faulty.injected.get(kind, 0) if isinstance(faulty, FaultyBackend) else faulty.injected
        figures["faults_injected"] += injected
        figures["retries"] += retrying.retries
        # bounded: never more than attempts-1 retries for each logical call
        assert retrying.retries <= (ATTEMPTS - 1) * counting.calls
        clean = Repository.open(raw, KEK)
        if ok:
            figures["completed"] += 1
            reader = clean.open_disk_reader("vm", "p1", "vda")
            assert reader.read(0, src.size) == src.image(), f"{kind}@{rate}: point with wrong/missing data"
            assert clean.verify(read_data=True).ok
        else:
            figures["failed_typed"] += 1
            assert err.code, err
            assert clean.point_ids() == [], f"{kind}@{rate}: a failed backup left a point ({err.code})"
        raw.close()
    report(f"storage_faults[{backend_kind}]", kinds=len(KINDS), rates="1%/5%/20%", **figures)
    assert figures["faults_injected"] > 0 and figures["completed"] > 0


@pytest.mark.parametrize("listing", ["fail", "empty_points", "empty_chunks"])
def test_no_deletion_after_failed_or_empty_listing(listing, tmp_path):
    """GC reads everything before deleting; a failed listing stops it, an empty one can only put
    chunks in the grace period; once listings are right again, nothing live has gone."""
    raw = open_backend(f"file://{tmp_path}/v", retry=False, fsync=False)
    clock = FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))
    repo = Repository.init(raw, KEK, {"name": "gc"}, chunk_size=64 << 10, clock=clock)
    src = _disk(5)
    repo.backup("vm", "p1", [src], {})
    before = repo.stored_chunk_ids()

    class Lying(Backend):
        location = raw.location
        def prepare(self): pass
        def close(self): pass
        def is_permanent(self, exc): return raw.is_permanent(exc)
        def store(self, n, d): raw.store(n, d)
        def load(self, n): return raw.load(n)
        def exists(self, n): return raw.exists(n)
        def delete(self, n): raw.delete(n)

        def list(self, prefix=""):
            if listing == "fail" and prefix.startswith(("points", "chunks")):
                from haven.engine.errors import StorageUnavailable

                raise StorageUnavailable(detail="injected listing failure")
            if listing == "empty_points" and prefix.startswith("points"):
                return iter(())
            if listing == "empty_chunks" and prefix.startswith("chunks"):
                return iter(())
            return raw.list(prefix)

    liar = Repository.open(Lying(), KEK, clock=clock)
    for _ in range(3):
        try:
            liar.gc()  # default grace (24 h)
        except HavenError as exc:  # a failed listing, or GC refusing a listing without any point
            assert listing in ("fail", "empty_points") and exc.transient
        clock.advance(timedelta(hours=6))
    assert repo.stored_chunk_ids() == before, "GC deleted chunks after a failed/empty listing"
    # listings are right again; the grace period has passed since the wrong sighting: nothing live goes
    clock.advance(timedelta(days=2))
    repo.gc()
    assert repo.stored_chunk_ids() == before
    assert repo.verify(read_data=True).ok
    report(f"gc_listing[{listing}]", deleted_live=0)


def test_two_empty_point_listings_a_grace_apart_delete_nothing(tmp_path):
    raw = open_backend(f"file://{tmp_path}/v", retry=False, fsync=False)
    clock = FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))
    repo = Repository.init(raw, KEK, {"name": "gc"}, chunk_size=64 << 10, clock=clock)
    repo.backup("vm", "p1", [_disk(6)], {})
    before = repo.stored_chunk_ids()

    class EmptyPoints(Counting):
        def list(self, p=""):
            return iter(()) if p.startswith("points") else raw.list(p)

    liar = Repository.open(EmptyPoints(raw), KEK, clock=clock)
    for _ in range(2):
        with pytest.raises(GcRefused):  # no point listed, yet chunks exist: GC refuses
            liar.gc()
        clock.advance(timedelta(hours=25))
    assert repo.stored_chunk_ids() == before, "GC deleted every live chunk after two empty listings"

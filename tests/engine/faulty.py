"""A fault injector for tests (never shipped in ``haven``): wraps a backend and misbehaves on purpose, reproducibly.

Faults (``Fault.kind``):

``error``       the call raises a transient ``StorageUnavailable``
``permanent``   the call raises a permanent ``StorageRequestRejected``
``timeout``     the call waits ``delay`` seconds then raises ``StorageTimeout``
``truncate``    ``load`` returns the object cut short
``bitflip``     ``load`` returns the object with one bit flipped
``lost_write``  ``store`` reports success and stores nothing
``list_fail``   ``list`` raises a transient error (after yielding nothing)

Each fault applies to the operations in ``ops`` (default: every one it makes sense for), to
names starting with ``prefix``, with probability ``rate`` (seeded) or on the ``nth`` matching
call only, at most ``limit`` times.

Every fault a test plans must fire before the test ends (as kopia's ``blobtesting.FaultyStorage``
``VerifyAllFaultsExercised``): a fault that never fires means the test does not test what it says.
The autouse fixture :func:`faults_exercised` checks it; ``tests/engine/conftest.py`` and
``tests/reliability/conftest.py`` import it. A test that plans a fault which may rightly not fire
(a probability, a reproducible seed) says so with ``Fault(..., optional=True)``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from haven.engine.backend import Backend, ObjectInfo
from haven.engine.errors import StorageRequestRejected, StorageTimeout, StorageUnavailable

__all__ = ["Fault", "FaultyBackend", "FAULT_KINDS", "faults_exercised", "unexercised"]

_DEFAULT_OPS = {
    "error": ("store", "load", "exists", "list", "delete"),
    "permanent": ("store", "load", "exists", "list", "delete"),
    "timeout": ("store", "load", "exists", "list", "delete"),
    "truncate": ("load",),
    "bitflip": ("load",),
    "lost_write": ("store",),
    "list_fail": ("list",),
}
FAULT_KINDS = tuple(_DEFAULT_OPS)


@dataclass
class Fault:
    kind: str
    rate: float = 1.0
    ops: tuple[str, ...] | None = None
    prefix: str = ""
    nth: int | None = None  # 1-based: only the nth matching call
    limit: int | None = None
    delay: float = 0.01
    optional: bool = False  # True: the test does not require it to fire (see the module's doc)

    def __post_init__(self) -> None:
        if self.kind not in _DEFAULT_OPS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.ops is None:
            self.ops = _DEFAULT_OPS[self.kind]


class FaultyBackend(Backend):
    """Wraps ``inner`` and injects ``faults``; ``injected`` counts what happened per kind."""

    def __init__(self, inner: Backend, faults: list[Fault], seed: int = 0):
        self.inner, self.faults = inner, list(faults)
        self.location = inner.location
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seen = [0] * len(self.faults)
        self.injected: dict[str, int] = {}
        self.enabled = True
        _made.append(self)

    def _pick(self, op: str, name: str) -> Fault | None:
        if not self.enabled:
            return None
        with self._lock:
            for i, f in enumerate(self.faults):
                if op not in f.ops or not name.startswith(f.prefix):
                    continue
                if f.limit is not None and self.injected.get(f"{i}", 0) >= f.limit:
                    continue
                self._seen[i] += 1
                hit = self._seen[i] == f.nth if f.nth is not None else self._rng.random() < f.rate
                if hit:
                    self.injected[f"{i}"] = self.injected.get(f"{i}", 0) + 1
                    self.injected[f.kind] = self.injected.get(f.kind, 0) + 1
                    return f
        return None

    def _raise(self, f: Fault, op: str, name: str) -> None:
        detail = f"injected {f.kind} on {op} {name}"
        if f.kind in ("error", "list_fail"):
            raise StorageUnavailable(detail=detail)
        if f.kind == "permanent":
            raise StorageRequestRejected(detail=detail)
        if f.kind == "timeout":
            time.sleep(f.delay)
            raise StorageTimeout(detail=detail)

    def prepare(self) -> None:
        self.inner.prepare()

    def store(self, name: str, data: bytes) -> None:
        f = self._pick("store", name)
        if f is not None:
            if f.kind == "lost_write":
                return
            self._raise(f, "store", name)
        self.inner.store(name, data)

    def load(self, name: str) -> bytes:
        f = self._pick("load", name)
        if f is not None and f.kind not in ("truncate", "bitflip"):
            self._raise(f, "load", name)
        data = self.inner.load(name)
        if f is not None and f.kind == "truncate":
            return data[: self._rng.randrange(len(data))] if data else data
        if f is not None and f.kind == "bitflip" and data:
            with self._lock:
                bit = self._rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            return bytes(flipped)
        return data

    def exists(self, name: str) -> bool:
        f = self._pick("exists", name)
        if f is not None:
            self._raise(f, "exists", name)
        return self.inner.exists(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        f = self._pick("list", prefix)
        if f is not None:
            self._raise(f, "list", prefix)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        f = self._pick("delete", name)
        if f is not None:
            self._raise(f, "delete", name)
        self.inner.delete(name)

    def is_permanent(self, exc: BaseException) -> bool:
        return self.inner.is_permanent(exc)

    def close(self) -> None:
        self.inner.close()


#: The injectors made since the running test began (the fixture below empties it per test).
_made: list[FaultyBackend] = []


def unexercised(backends: list[FaultyBackend]) -> list[str]:
    """The planned, required faults of ``backends`` that never fired, described."""
    return [f"{f} (on {b.location})" for b in backends for i, f in enumerate(b.faults)
            if not f.optional and not b.injected.get(f"{i}")]


@pytest.fixture(autouse=True)
def faults_exercised():
    """Fails the test if a fault it planned never fired."""
    start = len(_made)
    yield
    made = _made[start:]
    del _made[start:]
    missing = unexercised(made)
    if missing:
        pytest.fail("planned faults never fired: " + "; ".join(missing), pytrace=False)

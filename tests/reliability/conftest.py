"""Reliability battery (issue 10). ``HAVEN_RELIABILITY=full`` switches every test from the short form
run by ``make test`` to the full form run by ``make reliability``; the sizes live in ``SIZES``.

Every test prints one ``RELIABILITY <name> key=value ...`` line (run with ``-s`` to see them);
``docs/reliability.md`` quotes those lines from the last full run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from haven.engine import LocalKeyWrapper
from tests.engine.faulty import faults_exercised  # noqa: F401  (every fault a test plans must fire)

FULL = os.environ.get("HAVEN_RELIABILITY", "").lower() == "full"
MiB = 1 << 20
KEK = LocalKeyWrapper(b"reliability-master-key-000000000")

#: (short form, full form)
SIZES = {
    "crash_points": (10, 200),
    "crash_image": (24 * MiB, 2048 * MiB),
    "crash_chunk": (256 << 10, 1 * MiB),
    "fault_rounds": (1, 4),
    "bitrot_objects": (50, 1000),
    "concurrency_rounds": (5, 50),
    "disk_full_rounds": (10, 100),
    "db_kill_points": (1, 50),
    "server_kill_points": (4, 200),
}


def size(name: str) -> int:
    short, full = SIZES[name]
    return full if FULL else short


def report(name: str, **figures) -> None:
    """One greppable line of figures per test (quoted in docs/reliability.md)."""
    line = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nRELIABILITY {name} mode={'full' if FULL else 'short'} {line}")
    log = os.environ.get("HAVEN_RELIABILITY_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"RELIABILITY {name} mode={'full' if FULL else 'short'} {line}\n")


def make_image(path: Path, size_bytes: int, seed: int, fill: float = 0.6, block: int = 64 << 10) -> Path:
    """A sparse raw image: ``fill`` of its 64 KiB blocks hold seeded random (incompressible) or
    repetitive data, the rest are holes. Some blocks repeat others (deduplication)."""
    rng = random.Random(seed)
    blocks = size_bytes // block
    with open(path, "wb") as fh:
        fh.truncate(size_bytes)
        pool: list[bytes] = []
        for i in range(blocks):
            if rng.random() >= fill:
                continue
            r = rng.random()
            if pool and r < 0.1:
                data = rng.choice(pool)
            elif r < 0.3:
                data = (b"haven-%d-" % rng.randrange(1 << 30)) * (block // 16)
                data = data[:block]
            else:
                data = rng.randbytes(block)
            if len(pool) < 64:
                pool.append(data)
            fh.seek(i * block)
            fh.write(data)
    return path

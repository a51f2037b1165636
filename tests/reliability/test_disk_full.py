"""Item 5 — disk full: a local vault whose folder "runs out of space" (ENOSPC from a byte quota,
raised exactly where the real write would fail). Every backup and GC succeeds or fails with a
typed error; once space is back, verify is clean and every recorded point restores."""

from __future__ import annotations

import errno
import random
from datetime import timedelta

from haven.engine import LocalBackend, Repository, RetryingBackend
from haven.engine.local import _raise
from haven.errors import HavenError
from tests.engine.sources import random_disk

from .conftest import KEK, MiB, report, size

CS = 64 << 10


class FullDisk(LocalBackend):
    def __init__(self, root):
        super().__init__(root, fsync=False)
        self.quota: int | None = None

    def used(self) -> int:
        total = 0
        for p in self.root.rglob("*"):
            try:
                total += p.stat().st_size if p.is_file() else 0
            except FileNotFoundError:  # another upload thread renamed its temporary file meanwhile
                pass
        return total

    def store(self, name, data):
        if self.quota is not None and self.used() + len(data) > self.quota:
            _raise(OSError(errno.ENOSPC, "No space left on device"), name, "write")
        super().store(name, data)


def test_disk_full_rounds(tmp_path):
    rng = random.Random(100)
    disk = FullDisk(tmp_path / "vault")
    Repository.init(disk, KEK, {"name": "full"}, chunk_size=CS)
    repo = Repository.open(RetryingBackend(disk, attempts=3, sleep=lambda s: None), KEK)
    src = random_disk("vda", 2 * MiB, seed=1, fill=0.9, chunk=CS)
    good: dict[str, object] = {}
    figures = {"rounds": 0, "completed": 0, "failed_typed": 0, "gc_failed_typed": 0}
    for rnd in range(size("disk_full_rounds")):
        figures["rounds"] += 1
        src = src.with_changes({rng.randrange(src.size - CS): rng.randbytes(CS) for _ in range(rng.randint(1, 8))}, report_changed=False)
        disk.quota = disk.used() + rng.randrange(0, (3 if rnd % 2 else 40) * CS)
        try:
            repo.backup("vm", f"p{rnd}", [src], {})
            good[f"p{rnd}"] = src
            figures["completed"] += 1
        except HavenError as exc:
            assert exc.code
            figures["failed_typed"] += 1
            assert not repo.point_exists("vm", f"p{rnd}")
        if rnd % 3 == 2:
            old = sorted(good)[:1]
            for p in old:
                repo.delete_point("vm", p)
                good.pop(p)
            try:
                repo.gc(grace=timedelta(0))
            except HavenError as exc:
                assert exc.code
                figures["gc_failed_typed"] += 1
        disk.quota = None
        check = repo.verify(read_data=True)
        assert check.ok, check.as_dict()
    for p, s in good.items():
        assert repo.open_disk_reader("vm", p, "vda").read(0, s.size) == s.image()
    report("disk_full", **figures, data_lost=0)
    assert figures["completed"] and figures["failed_typed"]

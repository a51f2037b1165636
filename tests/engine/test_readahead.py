"""The backup keeps several reads of a disk in flight (an NBD export answers each request a round
trip later: one at a time leaves the link idle), hands the chunks on in order, and a failed read
fails the backup with the source's typed error and leaves no point."""

from __future__ import annotations

import threading
import time

import pytest

from haven.engine import Repository
from haven.engine.errors import RecoveryPointNotFound, SourceReadFailed

from .sources import MemorySource, random_disk

KiB = 1 << 10
CHUNK = 64 * KiB


class LatentSource(MemorySource):
    """Every read takes 10 ms (a round trip); records how many ran at once."""

    def __init__(self, base: MemorySource, fail_at: int | None = None):
        super().__init__(base.name, base.size, base.segments)
        self.active = self.peak = 0
        self._gate = threading.Lock()
        self.fail_at = fail_at

    def read(self, offset, length):
        with self._gate:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.01)
            if self.fail_at is not None and offset <= self.fail_at < offset + length:
                raise OSError(5, "Input/output error")
            return super().read(offset, length)
        finally:
            with self._gate:
                self.active -= 1


@pytest.fixture
def small_repo(local_backend, kek) -> Repository:
    return Repository.init(local_backend, kek, {"name": "v"}, chunk_size=CHUNK)


def test_backup_keeps_several_reads_in_flight(small_repo, tmp_path):
    disk = LatentSource(random_disk("vda", 2 << 20, 7, fill=1.0, chunk=16 * KiB))
    small_repo.backup("vm", "p1", [disk], {})
    assert disk.peak >= 3
    small_repo.restore_disk("vm", "p1", "vda", tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == disk.image()


def test_failed_read_ahead_fails_the_backup(small_repo):
    disk = LatentSource(random_disk("vda", 2 << 20, 8, fill=1.0, chunk=16 * KiB), fail_at=1 << 20)
    with pytest.raises(SourceReadFailed):
        small_repo.backup("vm", "p1", [disk], {})
    with pytest.raises(RecoveryPointNotFound):
        small_repo.load_point("vm", "p1")

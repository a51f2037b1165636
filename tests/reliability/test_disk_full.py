"""Item 5 — disk full: a local vault whose folder "runs out of space" (ENOSPC from a byte quota,
raised exactly where the real write would fail). Every backup and GC succeeds or fails with a
typed error; once space is back, verify is clean and every recorded point restores."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from haven.engine import LocalBackend, Repository, RetryingBackend
from haven.engine.errors import StorageVaultFull
from haven.engine.local import _raise
from haven.errors import HavenError
from haven.jobs.runner import JobRunner
from tests.engine.sources import random_disk
from tests.foundation.helpers import make_folder_vm, register_local_host
from tests.services._util import require

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


# ---- a real full file system: its own typed error, never retried, the job's error code ----


@contextmanager
def _small_filesystem(path: Path, size_bytes: int):
    """A tmpfs of ``size_bytes`` mounted at ``path``: writes past it fail with a real ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], capture_output=True, text=True)
    require(done.returncode == 0, f"a small file system (mount -t tmpfs, root only): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_file_system_is_vault_full_and_not_retried(tmp_path):
    with _small_filesystem(tmp_path / "small", 256 << 10) as root:
        slept: list[float] = []
        backend = RetryingBackend(LocalBackend(root / "vault"), attempts=5, sleep=slept.append)
        backend.prepare()
        with pytest.raises(StorageVaultFull) as caught:
            backend.store("chunks/00/big", os.urandom(1 << 20))
        assert caught.value.code == "StorageErrorVaultFull" and not caught.value.transient
        assert "free space" in caught.value.fix and "network" not in caught.value.fix
        assert backend.retries == 0 and slept == []  # a full disk does not empty itself: no retry, no wait
        assert list(backend.list("chunks/")) == [] and not any((root / "vault" / "chunks" / "00").iterdir())  # no leftovers


def test_a_backup_into_a_full_vault_fails_with_vault_full(core, api, home):
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    with _small_filesystem(home / "storage" / "local", 512 << 10):
        core.subscriptions.create(owner, "prod")
        core.vaults.create(owner, "prod", "v1", "local")
        make_folder_vm(home / "vms", "web1", size=8 << 20, data=os.urandom(4 << 20))  # 4 MiB that do not compress
        register_local_host(core, home / "vms")
        core.protection.enable(owner, "prod", "v1", "web1")
        items = "/api/v1/subscriptions/prod/vaults/v1/items"
        r = api.post(f"{items}/web1/backup", json={})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert JobRunner(core.queue, core.job_handlers()).run_once() == job_id
        job = api.get(f"/api/v1/subscriptions/prod/jobs/{job_id}").json()
        assert job["status"] == "Failed", job
        assert job["error"]["code"] == "StorageErrorVaultFull", job["error"]
        assert "free space" in job["error"]["recommendation"]
        assert api.get(f"{items}/web1/recovery-points").json() == []
        assert api.get(f"{items}/web1").json()["last_backup_status"] == "Failed"


def test_a_full_folder_vault_reached_through_the_storage_endpoint_is_vault_full(tmp_path):
    """A remote host agent writes a folder vault through the server's storage endpoint: the server's full
    disk reaches the agent as the same typed error, not as an unreachable endpoint to retry."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    from haven.api.storage_endpoint import storage_router
    from haven.services.objects import ObjectService
    from haven.engine.http import HttpBackend
    from tests.services._util import free_port, wait_for_port

    with _small_filesystem(tmp_path / "small", 256 << 10) as root:
        app = FastAPI()
        app.include_router(storage_router(ObjectService(lambda token, vault_id: LocalBackend(root / vault_id))))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for_port(port)
            slept: list[float] = []
            backend = RetryingBackend(HttpBackend(f"http://127.0.0.1:{port}", "v1", token="t"), attempts=5, sleep=slept.append)
            backend.prepare()
            backend.store("chunks/00/small", b"fits")
            with pytest.raises(StorageVaultFull):
                backend.store("chunks/00/big", os.urandom(1 << 20))
            assert backend.retries == 0 and slept == []
        finally:
            server.should_exit = True
            thread.join(10)


@pytest.mark.parametrize("code,status", [("QuotaExceeded", 403), ("XMinioStorageFull", 507), ("InsufficientStorage", 507)])
def test_s3_answers_that_mean_full_are_vault_full(code, status):
    from botocore.exceptions import ClientError

    from haven.engine.s3 import _convert

    answer = ClientError({"Error": {"Code": code, "Message": "full"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    err = _convert(answer, "store", "chunks/00/x")
    assert isinstance(err, StorageVaultFull) and not err.transient

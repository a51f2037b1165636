"""A protected image-folder VM with awkward disks (a 0-byte disk, a size that is not a multiple of the
chunk size, a sparse region) and two NICs, and helpers to back it up and restore synchronously."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from haven.jobs.runner import JobRunner
from tests.foundation.helpers import register_local_host

CHUNK = 1 << 20
#: name -> size: a size that is not a multiple of the chunk size (whole 512-byte sectors: qemu-img rounds
#: raw images up to a sector), an empty disk, a sparse one
DISKS = {"vda": 4 * CHUNK + 25 * 512, "vdb": 0, "vdc": 16 * CHUNK}
NICS = [{"mac": "52:54:00:aa:00:01", "network": "default", "model": "virtio"},
        {"mac": "52:54:00:aa:00:02", "network": "storage-net", "model": "e1000"}]


def make_vm(root: Path, name: str, disks: dict[str, int] = DISKS, nics: list | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for dname, size in disks.items():
        path = folder / f"{dname}.raw"
        with open(path, "wb") as fh:
            fh.truncate(size)
            if size:
                fh.seek(size // 3)
                fh.write(os.urandom(min(size - size // 3, 300_000)))
                fh.seek(max(0, size - 777))
                fh.write(os.urandom(min(777, size)))  # the short last chunk holds data
        entries.append({"name": dname, "file": path.name, "format": "raw"})
    definition = {"name": name, "disks": entries, "nics": NICS if nics is None else nics, "memory_mib": 256, "vcpus": 2}
    (folder / "vm.json").write_text(json.dumps(definition))
    return folder


def same_bytes(a: str | Path, b: str | Path) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class World:
    def __init__(self, core, home: Path):
        self.core, self.home = core, home
        self.token = core.auth.bootstrap_local_owner(home / "credentials.json", "x")
        self.owner = core.auth.authenticate(self.token)
        self.runner = JobRunner(core.queue, core.job_handlers(), on_failure=core.alerts.job_failed)
        self.vms = home / "vms"

    def setup(self, vm: str = "web1", redundancy: str | None = None, disks: dict[str, int] = DISKS, nics: list | None = None) -> None:
        self.core.subscriptions.create(self.owner, "prod")
        self.core.vaults.create(self.owner, "prod", "v1", "local", redundancy)
        self.vm_folder = make_vm(self.vms, vm, disks, nics)
        self.host_id = register_local_host(self.core, self.vms)
        self.core.protection.enable(self.owner, "prod", "v1", vm)

    def vault(self):
        from haven.db.models import Vault

        with self.core.db.session() as s:
            v = s.query(Vault).one()
            s.expunge(v)
            return v

    def backup(self, vm: str = "web1") -> dict:
        job = self.core.protection.backup_now(self.owner, "prod", "v1", vm)
        return self.run(job["id"])

    def run(self, job_id: str) -> dict:
        while True:
            ran = self.runner.run_once()
            assert ran is not None, "no job to run"
            if ran == job_id:
                return self.core.jobs.show(self.owner, "prod", job_id)

    def ok(self, job: dict) -> dict:
        job = self.run(job["id"])
        assert job["status"] in ("Completed", "CompletedWithWarnings"), job
        return job

    def points(self, vm: str = "web1") -> list[dict]:
        return self.core.points.list(self.owner, "prod", "v1", vm)


@pytest.fixture
def world(core, home) -> World:
    return World(core, home)

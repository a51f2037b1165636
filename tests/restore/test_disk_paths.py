"""Finding 11 of issue 16 — an image-folder VM's disks stay inside its folder: a ``vm.json`` naming an
absolute path, a ``../..`` path or a symbolic link out of the folder is listed with a typed problem on
that disk and its backup fails typed, the fix naming ``[folder] allowed_disk_roots``; nothing outside
is read. With the folder allowed in ``haven.toml`` the same VM backs up and restores byte for byte."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from tests.foundation.helpers import register_local_host
from tests.restore.conftest import same_bytes

CODE = "UserErrorDiskOutsideVmFolder"


def folder_vm(vms: Path, name: str, file: str) -> Path:
    folder = vms / name
    folder.mkdir(parents=True)
    (folder / "vm.json").write_text(json.dumps({"name": name, "disks": [{"name": "vda", "file": file, "format": "raw"}]}))
    return folder


def image(path: Path, size: int = 3 << 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(size // 4)
        fh.write(os.urandom(200_000))
    return path


def api_for(world) -> TestClient:
    client = TestClient(create_app(world.core), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {world.token}"
    return client


class FifoWatch:
    """Named pipes standing in for files outside the folder: whoever opens one to read it is seen.

    A reader's open blocks until a writer comes; the watcher is that writer, notes the open and
    closes at once (the reader gets end of file), so a read is recorded, never missed, never hung.
    """

    def __init__(self, paths: list[Path]):
        self.paths, self.opened = paths, set()
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.mkfifo(p)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for p in self.paths:
                try:
                    fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody has it open for reading
                    continue
                self.opened.add(p)
                os.close(fd)
            time.sleep(0.005)

    def stop(self) -> set[Path]:
        self._stop.set()
        self._thread.join()
        return self.opened


def escaping_vms(world, tmp_path: Path) -> FifoWatch:
    """VMs whose disk is outside their folder: absolute paths, a ``..`` path, and a symbolic link."""
    watch = FifoWatch([tmp_path / "abs.img", tmp_path / "outside.img", tmp_path / "elsewhere" / "secret.img"])
    folder_vm(world.vms, "abs-vm", "/etc/hostname")
    folder_vm(world.vms, "abs-fifo-vm", str(tmp_path / "abs.img"))
    folder_vm(world.vms, "dotdot-vm", "../../../outside.img")
    assert (world.vms / "dotdot-vm" / "../../../outside.img").resolve() == (tmp_path / "outside.img").resolve()
    link = folder_vm(world.vms, "link-vm", "vda.raw")
    (link / "vda.raw").symlink_to(tmp_path / "elsewhere" / "secret.img")
    return watch


def test_disks_outside_the_vm_folder_are_listed_with_a_problem_and_never_backed_up(world, tmp_path):
    world.core.subscriptions.create(world.owner, "prod")
    world.core.vaults.create(world.owner, "prod", "v1", "local")
    watch = escaping_vms(world, tmp_path)
    try:
        register_local_host(world.core, world.vms)
        api = api_for(world)
        listed = {vm["name"]: vm for vm in api.get("/api/v1/vms").json()}
        for vm in ("abs-vm", "abs-fifo-vm", "dotdot-vm", "link-vm"):
            (disk,) = listed[vm]["disks"]
            assert disk["problem"]["code"] == CODE, disk
            assert "allowed_disk_roots" in disk["problem"]["recommendation"]
            r = api.post("/api/v1/subscriptions/prod/vaults/v1/items", json={"vm": vm})
            assert r.status_code == 201, r.text
            r = api.post(f"/api/v1/subscriptions/prod/vaults/v1/items/{vm}/backup", json={})
            assert r.status_code == 202, r.text
            world.run(r.json()["id"])
            job = api.get(f"/api/v1/subscriptions/prod/jobs/{r.json()['id']}").json()
            assert job["status"] == "Failed" and job["error"]["code"] == CODE, job
            assert "[folder] allowed_disk_roots" in job["error"]["recommendation"], job["error"]
            assert api.get(f"/api/v1/subscriptions/prod/vaults/v1/items/{vm}/recovery-points").json() == []
    finally:
        opened = watch.stop()
    assert opened == set(), f"Haven opened files outside the VM folders: {sorted(map(str, opened))}"


@pytest.fixture
def allowed_root(home, tmp_path) -> Path:
    """``[folder] allowed_disk_roots`` in the server's haven.toml (written before the core starts)."""
    root = tmp_path / "images"
    root.mkdir()
    home.mkdir(parents=True, exist_ok=True)
    (home / "haven.toml").write_text(f'[folder]\nallowed_disk_roots = ["{root}"]\n')
    return root


def test_a_disk_in_an_allowed_root_backs_up_and_restores_byte_for_byte(allowed_root, world, tmp_path):
    world.core.subscriptions.create(world.owner, "prod")
    world.core.vaults.create(world.owner, "prod", "v1", "local")
    shared = image(allowed_root / "db1.raw")
    linked = folder_vm(world.vms, "link-vm", "vda.raw")
    (linked / "vda.raw").symlink_to(shared)
    folder_vm(world.vms, "abs-vm", str(shared))
    folder_vm(world.vms, "still-outside", "/etc/hostname")  # allowing one folder allows no other
    register_local_host(world.core, world.vms)
    api = api_for(world)
    listed = {vm["name"]: vm for vm in api.get("/api/v1/vms").json()}
    assert listed["still-outside"]["disks"][0]["problem"]["code"] == CODE
    for vm in ("link-vm", "abs-vm"):
        assert "problem" not in listed[vm]["disks"][0]
        world.core.protection.enable(world.owner, "prod", "v1", vm)
        job = world.backup(vm)
        assert job["status"] in ("Completed", "CompletedWithWarnings"), job
        (point,) = world.points(vm)
        target = tmp_path / f"restored-{vm}"
        world.ok(world.core.points.restore_disks(world.owner, "prod", "v1", vm, point["id"], str(target)))
        assert same_bytes(target / "vda.raw", shared)

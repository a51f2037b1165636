"""`haven vault import`: a new, empty server rebuilds a vault from its storage alone and restores from it."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from haven.config import RegionConfig, load_settings
from haven.engine import LocalKeyWrapper, Repository
from haven.engine.errors import RepositoryKeyMismatch
from haven.jobs.runner import JobRunner
from haven.services.core import Haven
from haven.services.restore import VaultImportConflict
from tests.restore.conftest import DISKS, same_bytes


@pytest.fixture
def new_server(request, tmp_path, db_url, clock, home):
    """A new server with an empty database and its own master key, in the same regions (same storage sites)."""
    old_home = home
    home = tmp_path / "new-server"
    home.mkdir()
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{home / 'haven.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"t_{uuid.uuid4().hex[:12]}")
    regions = (RegionConfig("local", f"file://{old_home / 'storage' / 'local'}", paired_region="paired"),
               RegionConfig("paired", f"file://{old_home / 'storage' / 'paired'}", paired_region="local"))
    core = Haven(load_settings(home, database_url=url, regions=regions), clock=clock)
    yield core
    core.close()


def test_import_rebuilds_items_and_points_from_storage_and_restores_byte_identical(world, new_server, tmp_path):
    world.setup()
    world.backup()
    world.core.clock.advance(timedelta(hours=3))
    with open(world.vm_folder / "vda.raw", "r+b") as fh:
        fh.write(b"second point")
    world.backup()
    old_points = {p["id"]: p for p in world.points()}
    vault = world.vault()
    storage_url = vault.storage_url
    old_key = (world.home / "master.key").read_bytes()

    new = new_server
    owner = new.auth.authenticate(new.auth.bootstrap_local_owner(new.settings.home / "credentials.json", "x"))
    new.subscriptions.create(owner, "restored")
    view = new.restore.import_vault(owner, "restored", storage_url, base64.b64encode(old_key).decode())
    assert view["name"] == "v1" and view["id"] == vault.id and view["region"] == "local"
    assert view["storage_redundancy"] == "GRS"  # its copy in the paired region was found
    assert view["imported_items"] == 1 and view["imported_recovery_points"] == 2 and view["key_rewrapped"] is True
    items = new.protection.list_items(owner, "restored", "v1")
    assert [i["vm"] for i in items] == ["web1"] and items[0]["protection_state"] == "ProtectionStopped"
    points = new.points.list(owner, "restored", "v1", "web1")
    assert {p["id"] for p in points} == set(old_points)
    for p in points:
        old = old_points[p["id"]]
        assert p["consistency"] == old["consistency"] and p["size_bytes"] == old["size_bytes"]
        assert p["time"].replace(tzinfo=None) == old["time"].replace(tzinfo=None)
        assert sorted(d["name"] for d in p["disks"]) == sorted(DISKS)
    # the data key is now wrapped by the new server's key; the old key no longer opens the vault
    backend = new.storage.backend(storage_url)
    Repository.open(backend, new.storage.kek())
    with pytest.raises(RepositoryKeyMismatch):
        Repository.open(backend, LocalKeyWrapper(old_key))

    latest = points[0]
    target = tmp_path / "restored-on-new-server"
    job = new.points.restore_disks(owner, "restored", "v1", "web1", latest["id"], str(target))
    runner = JobRunner(new.queue, new.job_handlers())
    assert runner.run_once() == job["id"]
    assert new.jobs.show(owner, "restored", job["id"])["status"] == "Completed"
    for name in DISKS:
        assert same_bytes(target / f"{name}.raw", world.vm_folder / f"{name}.raw"), name
    # the secondary copy opens with the new server's key too: cross-region restore works after an import
    crr = tmp_path / "crr-on-new-server"
    job = new.restore.restore_disks_secondary(owner, "restored", "v1", "web1", latest["id"], str(crr), ["vda"])
    assert runner.run_once() == job["id"]
    assert new.jobs.show(owner, "restored", job["id"])["status"] == "Completed"
    assert same_bytes(crr / "vda.raw", world.vm_folder / "vda.raw")

    # importing the same vault twice is refused, and nothing changes
    with pytest.raises(VaultImportConflict):
        new.restore.import_vault(owner, "restored", storage_url)


def test_import_with_a_wrong_master_key_changes_nothing(world, new_server):
    world.setup(disks={"vda": 1 << 20}, nics=[])
    world.backup()
    vault = world.vault()
    new = new_server
    owner = new.auth.authenticate(new.auth.bootstrap_local_owner(new.settings.home / "credentials.json", "x"))
    new.subscriptions.create(owner, "restored")
    with pytest.raises(RepositoryKeyMismatch):
        new.restore.import_vault(owner, "restored", vault.storage_url)  # the new server's own key is not the vault's
    assert new.vaults.list(owner, "restored") == []
    Repository.open(world.core.storage.backend(vault.storage_url), world.core.storage.kek())  # still the old key's

"""GRS vaults: backups are copied to the paired region's storage; restores run there when the primary is gone."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from haven.engine import Repository
from haven.services.restore import CrossRegionRestoreUnavailable
from tests.foundation.helpers import register_local_host
from tests.restore.conftest import DISKS, make_vm, same_bytes


def _objects(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name}


def test_grs_backups_replicate_only_missing_objects_and_restore_from_the_secondary_when_the_primary_is_gone(world, tmp_path):
    world.setup()  # region "local" has the paired region "paired": the vault is GRS by default
    vault = world.vault()
    assert vault.redundancy == "GRS"
    primary = Path(vault.storage_url.removeprefix("file://"))
    secondary = world.home / "storage" / "paired" / vault.id
    world.backup()
    # everything but locks/GC state is in the secondary, byte for byte
    want = {k: v for k, v in _objects(primary).items() if not k.startswith(("locks/", "gc/"))}
    assert want and _objects(secondary) == want
    for name in want:
        assert (primary / name).read_bytes() == (secondary / name).read_bytes()
    first = world.points()[0]
    # the second backup changes one region: only its new chunks and manifest are copied
    with open(world.vm_folder / "vda.raw", "r+b") as fh:
        fh.seek(1 << 20)
        fh.write(os.urandom(4096))
    before = set(_objects(secondary))
    world.core.clock.advance(timedelta(hours=1))
    world.backup()
    new = set(_objects(secondary)) - before
    assert any(n.startswith("points/") for n in new) and 1 <= len([n for n in new if n.startswith("chunks/")]) <= 2
    summary = world.core.replication.sync(vault)
    assert summary.copied == 0 and summary.skipped >= len(want)
    second = world.points()[0]
    assert second["id"] != first["id"]
    listed = world.core.restore.list_secondary_points(world.owner, "prod", "v1", "web1")
    assert {p["id"] for p in listed} == {first["id"], second["id"]} and listed[0]["region"] == "paired"

    original = tmp_path / "vda-at-second.raw"
    shutil.copyfile(world.vm_folder / "vda.raw", original)
    shutil.rmtree(primary)  # the primary region is gone
    target = tmp_path / "crr"
    job = world.ok(world.core.restore.restore_disks_secondary(world.owner, "prod", "v1", "web1", second["id"], str(target)))
    assert job["result"]["region"] == "paired"
    assert same_bytes(target / "vda.raw", original)
    for name in DISKS:
        if name != "vda":
            assert same_bytes(target / f"{name}.raw", world.vm_folder / f"{name}.raw")
    assert (target / "vm-definition.xml").exists() and (target / "vm-template.json").exists()
    # the secondary copy is a complete vault on its own
    repo = Repository.open(world.core.storage.backend(f"file://{secondary}"), world.core.storage.kek())
    assert repo.verify(read_data=True, quarantine=False).ok


def test_restore_vm_in_the_paired_region_from_the_secondary_copy(world, tmp_path):
    world.setup(disks={"vda": (2 << 20) + 512}, nics=[])
    world.backup()
    point = world.points()[0]
    paired_vms = tmp_path / "paired-vms"
    paired_vms.mkdir()
    register_local_host(world.core, paired_vms, name="host2", region="paired")
    shutil.rmtree(Path(world.vault().storage_url.removeprefix("file://")))
    job = world.ok(world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "web1-dr",
                                                  use_secondary_region=True))
    assert job["result"]["host"] == "host2" and job["result"]["secondary_region"] is True
    assert same_bytes(paired_vms / "web1-dr" / "vda.raw", world.vm_folder / "vda.raw")


def test_cross_region_restore_needs_a_grs_vault(world, tmp_path):
    world.core.subscriptions.create(world.owner, "prod")
    world.core.vaults.create(world.owner, "prod", "v1", "local", "LRS")
    make_vm(world.vms, "web1", {"vda": 1 << 20}, [])
    register_local_host(world.core, world.vms)
    world.core.protection.enable(world.owner, "prod", "v1", "web1")
    world.backup()
    point = world.points()[0]
    assert not (world.home / "storage" / "paired").exists()
    with pytest.raises(CrossRegionRestoreUnavailable):
        world.core.restore.restore_disks_secondary(world.owner, "prod", "v1", "web1", point["id"], str(tmp_path / "x"))
    with pytest.raises(CrossRegionRestoreUnavailable):
        world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "n", use_secondary_region=True)

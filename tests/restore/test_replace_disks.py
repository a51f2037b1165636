"""Replace the original VM's disks from a recovery point: stopped VMs only, undoable."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select

from haven.db.models import VirtualMachine
from haven.services.restore import ReplaceDisksMismatch, ReplaceDisksVmRunning
from tests.restore.conftest import same_bytes


def test_replace_disks_keeps_the_current_disks_as_a_point_then_overwrites_them(world, tmp_path):
    world.setup(disks={"vda": (5 << 20) + 3 * 512, "vdb": 0}, nics=[])
    world.backup()
    original = tmp_path / "original.raw"
    shutil.copyfile(world.vm_folder / "vda.raw", original)
    point = world.points()[0]
    # the VM's disk changes after the backup (and grows)
    with open(world.vm_folder / "vda.raw", "r+b") as fh:
        fh.seek(1 << 20)
        fh.write(os.urandom(200_000))
        fh.truncate((6 << 20))
    changed = tmp_path / "changed.raw"
    shutil.copyfile(world.vm_folder / "vda.raw", changed)

    job = world.ok(world.core.restore.replace_disks(world.owner, "prod", "v1", "web1", point["id"]))
    assert same_bytes(world.vm_folder / "vda.raw", original)
    assert os.path.getsize(world.vm_folder / "vdb.raw") == 0
    undo = job["result"]["undo_recovery_point"]
    assert undo in {p["id"] for p in world.points()} and "replace-disks" in job["result"]["undo"]
    assert [t["name"] for t in job["subtasks"]][:1] == ["Back up current disks"]
    assert not [f for f in os.listdir(world.vm_folder) if "haven-replace" in f]

    # undo: the disks the VM had before the replace come back
    world.ok(world.core.restore.replace_disks(world.owner, "prod", "v1", "web1", undo))
    assert same_bytes(world.vm_folder / "vda.raw", changed)


def test_replace_disks_refuses_a_running_vm_and_unknown_disks(world):
    world.setup(disks={"vda": 1 << 20}, nics=[])
    world.backup()
    point = world.points()[0]
    with pytest.raises(ReplaceDisksMismatch):
        world.core.restore.replace_disks(world.owner, "prod", "v1", "web1", point["id"], ["vdz"])
    with world.core.db.session() as s:
        s.scalar(select(VirtualMachine).where(VirtualMachine.name == "web1")).power_state = "running"
    with pytest.raises(ReplaceDisksVmRunning) as err:
        world.core.restore.replace_disks(world.owner, "prod", "v1", "web1", point["id"])
    assert "stopped" in err.value.text and err.value.code == "UserErrorReplaceDisksVmNotStopped"

"""Disks of every size come back byte for byte: empty, not a multiple of a sector or of the chunk size."""

import json
import os

import pytest

from tests.foundation.helpers import register_local_host


@pytest.mark.parametrize("size", [0, 1, 511, (1 << 20) + 100, (3 << 20) - 7])
def test_raw_disk_of_any_size_restores_byte_for_byte(world, core, tmp_path, size):
    folder = world.home / "vms" / "odd"
    folder.mkdir(parents=True)
    content = os.urandom(size)
    (folder / "vda.raw").write_bytes(content)
    (folder / "vm.json").write_text(json.dumps({"name": "odd", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    core.subscriptions.create(world.owner, "prod")
    core.vaults.create(world.owner, "prod", "v1", "local")
    register_local_host(core, world.home / "vms")
    core.protection.enable(world.owner, "prod", "v1", "odd")
    point = world.backup("odd")["result"]["recovery_point_id"]
    job = core.points.restore_disks(world.owner, "prod", "v1", "odd", point, str(tmp_path / "r"))
    assert world.run(job["id"])["status"] == "Completed"
    assert (tmp_path / "r" / "vda.raw").read_bytes() == content

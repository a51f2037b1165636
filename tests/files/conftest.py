"""A protected image-folder VM whose disks hold real file systems (GPT: ext4 + XFS; whole disk:
Btrfs; MBR: FAT + NTFS), backed up twice (a file changes between the points)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.files import images
from tests.foundation.helpers import register_local_host, run_job

#: volume -> (disk, volume id, tree variant)
VOLUMES = {
    "ext4": ("vda", "p1", "full"),
    "xfs": ("vda", "p2", "xfs"),
    "btrfs": ("vdb", "disk", "full"),
    "fat": ("vdc", "p1", "fat"),
    "ntfs": ("vdc", "p2", "ntfs"),
}


def build_disks(work: Path, vm_folder: Path, version: int) -> dict[str, Path]:
    """The trees of ``version`` and the three disks made of them; returns variant -> tree."""
    base = work / f"v{version}"
    trees = {
        "full": images.make_tree(base / "full", version),
        "xfs": images.make_tree(base / "xfs", version, links=False, unicode=False),
        "fat": images.make_tree(base / "fat", version, links=False),
        "ntfs": images.make_tree(base / "ntfs", version, links=False),
    }
    # xfs protofiles cannot hold a hard link or a name with spaces: the same tree without them
    fs = base / "fs"
    fs.mkdir()
    images.partitioned(vm_folder / "vda.raw", "gpt", [images.ext4(trees["full"], fs / "ext4.img"), images.xfs(trees["xfs"], fs / "xfs.img")])
    images.btrfs(trees["full"], vm_folder / "vdb.raw")
    images.partitioned(vm_folder / "vdc.raw", "dos", [images.fat(trees["fat"], fs / "fat.img"), images.ntfs(trees["ntfs"], fs / "ntfs.img")])
    return trees


class FileWorld:
    def __init__(self, core, home: Path, api):
        self.core, self.home, self.api = core, home, api
        self.token = api.headers["Authorization"].split()[1]
        self.owner = core.auth.authenticate(self.token)
        self.vms = home / "vms"
        self.folder = self.vms / "files1"
        self.folder.mkdir(parents=True)
        self.trees: dict[int, dict[str, Path]] = {}
        self.points: list[str] = []

    def disks(self, version: int) -> None:
        self.trees[version] = build_disks(self.home / "trees", self.folder, version)
        entries = [{"name": n, "file": f"{n}.raw", "format": "raw"} for n in ("vda", "vdb", "vdc")]
        (self.folder / "vm.json").write_text(json.dumps({"name": "files1", "disks": entries}))

    def setup(self) -> None:
        self.core.subscriptions.create(self.owner, "prod")
        self.core.vaults.create(self.owner, "prod", "v1", "local", None)
        self.disks(1)
        register_local_host(self.core, self.vms)
        self.core.protection.enable(self.owner, "prod", "v1", "files1")

    def backup(self) -> str:
        job = self.core.protection.backup_now(self.owner, "prod", "v1", "files1")
        run_job(self.core, job["id"])
        assert self.core.jobs.show(self.owner, "prod", job["id"])["status"] in ("Completed", "CompletedWithWarnings")
        newest = self.core.points.list(self.owner, "prod", "v1", "files1")[0]["id"]
        self.points.append(newest)
        return newest

    def url(self, point: str, tail: str = "files") -> str:
        return f"/api/v1/subscriptions/prod/vaults/v1/items/files1/recovery-points/{point}/{tail}"


@pytest.fixture
def fw(core, home, api) -> FileWorld:
    return FileWorld(core, home, api)

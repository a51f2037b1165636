"""An LVM2 volume group in a GPT partition (metadata by the lvm2 tools; the root LV in two segments),
its ext4 holding a multi-GiB sparse file and a folder of 10,000 entries, backed up twice: listed,
downloaded and compared by hash as they stream (never whole in memory), and ``find`` naming exactly
the points that hold each version."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.files import images
from tests.files.test_roundtrip import listed, source_entries
from tests.foundation.helpers import register_local_host, run_job

GiB = 1 << 30
BIG = 2 * GiB + 12345
FOLDER = 10_000
BASE = "/api/v1/subscriptions/prod/vaults/v1/items/lvm1"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'haven.db'}"


def tree(root: Path, version: int) -> Path:
    images.make_tree(root, version)
    with open(root / "data" / "huge.img", "wb") as fh:  # sparse: a few islands of data in 2 GiB of holes
        fh.truncate(BIG)
        for at in (0, GiB + version * 4096 + 7, BIG - 100):
            fh.seek(at)
            fh.write(f"island {at} of version {version}\n".encode() * 2)
    many = root / "many"
    many.mkdir()
    for i in range(FOLDER - 1):
        (many / f"entry-{i:05d}.txt").write_text(f"{i}\n")
    (many / ("only-in-2.txt" if version == 2 else "only-in-1.txt")).write_text(f"{version}\n")
    return root


def disk(home: Path, version: int) -> Path:
    src = tree(home / f"tree{version}", version)
    fs = images.ext4(src, home / f"root{version}.img", 72 << 20)
    pv = images.lvm(home / f"pv{version}.img", "vg0", [("root", fs)])
    folder = home / "vms" / "lvm1"
    folder.mkdir(parents=True, exist_ok=True)
    images.partitioned(folder / "vda.raw", "gpt", [pv])
    (folder / "vm.json").write_text(json.dumps({"name": "lvm1", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    return src


def streamed_sha256(api, url: str, params: dict) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    with api.stream("GET", url, params=params) as r:
        assert r.status_code == 200, r.read()
        for block in r.iter_bytes():
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


@functools.cache
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def backup(core, owner) -> str:
    job = core.protection.backup_now(owner, "prod", "v1", "lvm1")
    run_job(core, job["id"])
    return core.points.list(owner, "prod", "v1", "lvm1")[0]["id"]


def test_lvm_volume_with_a_huge_sparse_file_and_a_big_folder(core, home, api):
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local", None)
    trees = {1: disk(home, 1)}
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "lvm1")
    points = {1: backup(core, owner)}
    trees[2] = disk(home, 2)
    points[2] = backup(core, owner)

    r = api.get(f"{BASE}/recovery-points/{points[1]}/volumes")
    assert r.status_code == 200, r.text
    assert {(v["id"], v["kind"], v["filesystem"]) for v in r.json()["volumes"]} == {("vg0/root", "lvm", "ext4"), ("vg0/gap", "lvm", None)}
    for version, point in points.items():
        rp = f"{BASE}/recovery-points/{point}"
        src = trees[version]
        r = api.get(f"{rp}/files", params={"path": "/many"})  # the only readable volume is picked
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
        assert sorted(e["name"] for e in entries) == sorted(os.listdir(src / "many")) and len(entries) == FOLDER
        assert all(e["size"] == (src / "many" / e["name"]).stat().st_size for e in entries)
        got = listed(api, f"{rp}/files", "vda", "vg0/root", "/etc")
        assert set(got) == {p for p in source_entries(src) if p.startswith("/etc/")}
        data = {e["name"]: e for e in api.get(f"{rp}/files", params={"path": "/data"}).json()["entries"]}
        assert (data["huge.img"]["type"], data["huge.img"]["size"]) == ("file", BIG)
        if version == 2:  # the islands differ between the versions: the point's own
            size, digest = streamed_sha256(api, f"{rp}/files/download", {"path": "/data/huge.img"})
            assert (size, digest) == (BIG, file_sha256(src / "data" / "huge.img"))
        r = api.get(f"{rp}/files/download", params={"path": "/many/entry-04321.txt"})
        assert r.content == b"4321\n"

    find = f"{BASE}/files/find"
    r = api.get(find, params={"name": "app.conf", "all_points": True})  # changed between the points
    assert r.status_code == 200, r.text
    assert sorted((m["recovery_point"], m["volume"], m["path"], m["sha256"]) for m in r.json()["matches"]) == sorted(
        (points[v], "vg0/root", "/etc/app.conf", file_sha256(trees[v] / "etc" / "app.conf")[:12]) for v in (1, 2))
    for version in (1, 2):
        r = api.get(find, params={"name": f"only-in-{version}.txt", "all_points": True, "path": "/many"})
        assert [(m["recovery_point"], m["path"]) for m in r.json()["matches"]] == [(points[version], f"/many/only-in-{version}.txt")]

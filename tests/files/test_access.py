"""Who may browse and download, and the audit of every download; hostile images give typed errors."""

from __future__ import annotations

import json
import os
import struct
from datetime import timedelta

from tests.files import images
from tests.foundation.helpers import register_local_host, run_job
from tests.security.principals import bearer, user_tokens


def small_vm(core, home, api, tree_version: int = 1) -> tuple[str, dict]:
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    core.subscriptions.create(owner, "prod")
    core.subscriptions.create(owner, "dev")
    core.vaults.create(owner, "prod", "v1", "local", None)
    folder = home / "vms" / "small"
    folder.mkdir(parents=True)
    tree = images.make_tree(home / "tree", tree_version)
    images.ext4(tree, folder / "vda.raw", 64 << 20)
    (folder / "vm.json").write_text(json.dumps({"name": "small", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "small")
    job = core.protection.backup_now(owner, "prod", "v1", "small")
    run_job(core, job["id"])
    point = core.points.list(owner, "prod", "v1", "small")[0]["id"]
    tokens, _ = user_tokens(core, owner)
    return point, tokens


BASE = "/api/v1/subscriptions/prod/vaults/v1"


def test_operator_browses_reader_and_other_subscription_are_refused_downloads_are_audited(core, home, api, clock):
    point, tokens = small_vm(core, home, api)
    rp = f"{BASE}/items/small/recovery-points/{point}"
    for who in ("reader", "other-owner", "none"):
        h = bearer(tokens[who]) if tokens[who] else {"Authorization": ""}
        for url, params in ((f"{rp}/files", {"path": "/etc"}), (f"{rp}/files/download", {"path": "/etc/app.conf"}),
                            (f"{rp}/volumes", {}), (f"{BASE}/items/small/files/find", {"name": "app.conf"})):
            r = api.get(url, params=params, headers=h)
            want = {"reader": 403, "other-owner": 404, "none": 401}[who]
            assert r.status_code == want, (who, url, r.text)
            assert r.json()["error"]["code"] in ("UserErrorAuthorizationFailed", "UserErrorTokenInvalid", "UserErrorSubscriptionNotFound",
                                                 "UserErrorNotFound", "UserErrorVaultNotFound"), r.text
    op = bearer(tokens["operator"])
    r = api.get(f"{rp}/files", params={"path": "/etc"}, headers=op)
    assert r.status_code == 200 and "app.conf" in [e["name"] for e in r.json()["entries"]]
    content = (home / "tree" / "etc" / "app.conf").read_bytes()
    r = api.get(f"{rp}/files/download", params={"path": "/etc/app.conf"}, headers=op)
    assert r.status_code == 200 and r.content == content
    clock.advance(timedelta(seconds=1))
    r = api.get(f"{rp}/files/download", params={"path": "/etc/app.conf"}, headers={**op, "Range": "bytes=2-5"})
    assert r.status_code == 206 and r.content == content[2:6]
    clock.advance(timedelta(seconds=1))
    r = api.get(f"{rp}/files/download", params={"path": "/etc"}, headers=op)
    assert r.status_code == 200
    tar_bytes = len(r.content)
    # the refused attempts left no audit rows; the three downloads are there, newest first, for a Reader too
    r = api.get(f"{BASE}/file-downloads", headers=bearer(tokens["reader"]))
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [(x["principal"], x["path"], x["kind"], x["bytes"], x["status"], x["recovery_point"]) for x in rows] == [
        ("operator", "/etc", "folder", tar_bytes, "Completed", point),
        ("operator", "/etc/app.conf", "file", 4, "Completed", point),
        ("operator", "/etc/app.conf", "file", len(content), "Completed", point),
    ]
    assert rows[1]["range"] == "bytes=2-5"
    assert api.get(f"{BASE}/file-downloads", headers=bearer(tokens["other-owner"])).status_code == 404


def test_bad_paths_and_names_are_typed_errors(core, home, api):
    point, _ = small_vm(core, home, api)
    rp = f"{BASE}/items/small/recovery-points/{point}"
    cases = [
        (f"{rp}/files", {"path": "/nope"}, 404, "UserErrorFileNotFound"),
        (f"{rp}/files", {"path": "/etc/app.conf"}, 400, "UserErrorFileNotAFolder"),
        (f"{rp}/files", {"path": "/../etc"}, 400, "UserErrorFilePathInvalid"),
        (f"{rp}/files", {"path": "/", "disk": "vdz"}, 400, "UserErrorFileDiskNotFound"),
        (f"{rp}/files", {"path": "/", "volume": "p9"}, 404, "UserErrorFileVolumeNotFound"),
        (f"{rp}/files/download", {"path": "/etc/main.conf/x"}, 400, "UserErrorFileNotAFolder"),
        (f"{BASE}/items/small/files/find", {"name": "a/b"}, 400, "UserErrorFindPatternInvalid"),
        (f"{BASE}/items/small/recovery-points/nope/files", {"path": "/"}, 404, "UserErrorRecoveryPointNotFound"),
    ]
    for url, params, status, code in cases:
        r = api.get(url, params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (params, r.text)
    assert api.get(f"{BASE}/file-downloads").json() == []
    # symlinks on the way are followed inside the volume: /etc-nginx -> /etc/nginx
    r = api.get(f"{rp}/files", params={"path": "/etc-nginx/conf.d"})
    assert r.status_code == 200 and [e["name"] for e in r.json()["entries"]] == ["site.conf"]


def _hostile_vm(core, home, api, mutate) -> tuple[str, str]:
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local", None)
    folder = home / "vms" / "bad"
    folder.mkdir(parents=True)
    tree = images.make_tree(home / "tree", 1, links=False)
    disk = images.ext4(tree, folder / "vda.raw", 32 << 20)
    mutate(disk, tree)
    (folder / "vm.json").write_text(json.dumps({"name": "bad", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "bad")
    job = core.protection.backup_now(owner, "prod", "v1", "bad")
    run_job(core, job["id"])
    point = core.points.list(owner, "prod", "v1", "bad")[0]["id"]
    return point, f"{BASE}/items/bad/recovery-points/{point}"


def _inode_offset(disk, inum: int) -> int:
    """Where inode ``inum`` lies (group 0 only, which is all a 32 MiB image has)."""
    with open(disk, "rb") as fh:
        fh.seek(1024)
        sb = fh.read(1024)
        bsize = 1024 << struct.unpack_from("<I", sb, 24)[0]
        isize = struct.unpack_from("<H", sb, 88)[0]
        fh.seek(bsize if bsize > 1024 else 2048)
        gd = fh.read(64)
        table = struct.unpack_from("<I", gd, 8)[0]
    return table * bsize + (inum - 1) * isize


def test_corrupt_superblock_is_a_typed_error(core, home, api):
    def smash(disk, tree):
        with open(disk, "r+b") as fh:
            fh.seek(1024 + 32)  # s_blocks_per_group = 0
            fh.write(b"\0\0\0\0")
    point, rp = _hostile_vm(core, home, api, smash)
    r = api.get(f"{rp}/files", params={"path": "/"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "UserErrorFileSystemCorrupt"), r.text


def test_absurd_file_size_is_refused_before_reading(core, home, api):
    def huge(disk, tree):
        inum = os.stat(tree / "etc" / "app.conf").st_ino  # not the image's: find it through debugfs instead
        del inum
        import subprocess

        out = subprocess.run(["debugfs", "-R", "stat /etc/app.conf", str(disk)], capture_output=True, text=True).stdout
        num = int(out.split("Inode:")[1].split()[0])
        with open(disk, "r+b") as fh:
            off = _inode_offset(disk, num)
            fh.seek(off + 4)  # i_size_lo
            fh.write(b"\xff\xff\xff\xff")
            fh.seek(off + 108)  # i_size_high
            fh.write(b"\xff\xff\xff\x7f")
    point, rp = _hostile_vm(core, home, api, huge)
    r = api.get(f"{rp}/files/download", params={"path": "/etc/app.conf"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "UserErrorFileSizeAbsurd"), r.text


def test_a_folder_that_contains_itself_is_a_typed_error(core, home, api):
    def loop(disk, tree):
        import subprocess

        # a directory entry in /a/b/c/d named 'up' that points back at /a (debugfs writes it without a mount)
        subprocess.run(["debugfs", "-w", "-R", "link /a /a/b/c/d/up", str(disk)], check=True, capture_output=True)
    point, rp = _hostile_vm(core, home, api, loop)
    r = api.get(f"{rp}/files/download", params={"path": "/a"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "UserErrorFileDirectoryLoop"), r.text
    r = api.get(f"{BASE}/items/bad/files/find", params={"name": "deep.txt"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "UserErrorFileDirectoryLoop"), r.text

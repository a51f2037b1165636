"""Every file of every file system of two recovery points, listed and downloaded through the API and
compared byte for byte with the originals; folders as tar streams; HTTP Range; find names exactly
the points that hold each version of a file."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from datetime import datetime
from pathlib import Path

import pytest

from tests.files.conftest import VOLUMES


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """This test reads file systems; its metadata store is SQLite (test_access.py runs on both engines)."""
    return f"sqlite:///{tmp_path / 'haven.db'}"


def source_entries(tree: Path) -> dict[str, os.stat_result]:
    return {"/" + str(p.relative_to(tree)): p.lstat() for p in tree.rglob("*")}


def listed(api, url: str, disk: str, volume: str, path: str = "/") -> dict[str, dict]:
    """Every entry under ``path``, walking the listing API."""
    out, todo = {}, [path]
    while todo:
        folder = todo.pop()
        r = api.get(url, params={"disk": disk, "volume": volume, "path": folder})
        assert r.status_code == 200, r.text
        for e in r.json()["entries"]:
            if e["path"] in ("/lost+found",) or e["path"].startswith("/System Volume Information"):
                continue
            out[e["path"]] = e
            if e["type"] == "dir":
                todo.append(e["path"])
    return out


def test_every_file_of_every_file_system_round_trips(fw):
    fw.setup()
    p1 = fw.backup()
    fw.disks(2)
    p2 = fw.backup()
    for version, point in ((1, p1), (2, p2)):
        for kind, (disk, volume, variant) in VOLUMES.items():
            tree = fw.trees[version][variant]
            want = source_entries(tree)
            got = listed(fw.api, fw.url(point), disk, volume)
            assert set(got) == set(want), (kind, set(got) ^ set(want))
            for path, st in want.items():
                e = got[path]
                if stat.S_ISLNK(st.st_mode):
                    assert (e["type"], e["target"]) == ("symlink", os.readlink(tree / path[1:])), (kind, path)
                    continue
                assert e["type"] == ("dir" if stat.S_ISDIR(st.st_mode) else "file"), (kind, path)
                if kind in ("ext4", "xfs", "btrfs"):
                    assert e["mode"] == stat.S_IMODE(st.st_mode), (kind, path)
                if kind in ("ext4", "btrfs", "ntfs"):  # an XFS protofile carries no times; FAT keeps local time in 2 s steps
                    assert int(datetime.fromisoformat(e["mtime"]).timestamp()) == int(st.st_mtime), (kind, path)
                if e["type"] == "file":
                    assert e["size"] == st.st_size, (kind, path)
                    r = fw.api.get(fw.url(point, "files/download"), params={"disk": disk, "volume": volume, "path": path})
                    assert r.status_code == 200, (kind, path, r.text)
                    assert r.content == (tree / path[1:]).read_bytes(), (kind, path)
    # a folder as a tar stream: modes, times, symlinks and hard links kept
    r = fw.api.get(fw.url(p2, "files/download"), params={"disk": "vda", "volume": "p1", "path": "/etc"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    tree = fw.trees[2]["full"]
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"etc"} | {"etc/" + str(p.relative_to(tree / "etc")) for p in (tree / "etc").rglob("*")}
        for name, m in members.items():
            src = tree / name
            st = src.lstat()
            if m.issym():
                assert m.linkname == os.readlink(src)
            elif m.islnk():
                assert os.path.samefile(tree / m.linkname, src)
            elif m.isfile():
                assert tar.extractfile(m).read() == src.read_bytes()
            if not m.issym():
                assert (m.mode, int(m.mtime)) == (stat.S_IMODE(st.st_mode), int(st.st_mtime)), name
        hard = [m for m in members.values() if m.islnk()]
        assert [m.name for m in hard] == ["etc/nginx/nginx.conf"] or [m.linkname for m in hard] == ["etc/nginx.conf.hard"]
    # HTTP Range on a large file, a suffix range, and a range past the end
    large = (tree / "data" / "large.bin").read_bytes()
    q = {"disk": "vdb", "path": "/data/large.bin"}
    r = fw.api.get(fw.url(p2, "files/download"), params=q, headers={"Range": "bytes=1048570-2097160"})
    assert r.status_code == 206 and r.content == large[1048570:2097161]
    assert r.headers["content-range"] == f"bytes 1048570-2097160/{len(large)}"
    r = fw.api.get(fw.url(p2, "files/download"), params=q, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == large[-100:]
    r = fw.api.get(fw.url(p2, "files/download"), params=q, headers={"Range": f"bytes={len(large)}-"})
    assert r.status_code == 416 and r.json()["error"]["code"] == "UserErrorRangeNotSatisfiable"
    assert r.headers["content-range"] == f"bytes */{len(large)}"
    # find: the changed file names each point with its own version's hash
    r = fw.api.get("/api/v1/subscriptions/prod/vaults/v1/items/files1/files/find", params={"name": "app.conf", "all_points": True})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    for version, point in ((1, p1), (2, p2)):
        digest = hashlib.sha256((fw.trees[version]["full"] / "etc" / "app.conf").read_bytes()).hexdigest()[:12]
        assert {(m["disk"], m["volume"]) for m in matches if m["recovery_point"] == point and m["sha256"] == digest} == \
            {(d, v) for d, v, _ in VOLUMES.values()}
    assert len(matches) == 2 * len(VOLUMES)
    r = fw.api.get("/api/v1/subscriptions/prod/vaults/v1/items/files1/files/find", params={"name": "new-in-*", "all_points": True})
    assert {m["recovery_point"] for m in r.json()["matches"]} == {p2}
    r = fw.api.get("/api/v1/subscriptions/prod/vaults/v1/items/files1/files/find", params={"name": "new-in-*"})
    assert r.json()["searched_points"] == [p2]

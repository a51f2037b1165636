"""haven restore files ls|get|find|downloads against a real `haven serve`: every file of a point
downloaded and compared byte for byte, a folder unpacked with its modes, times and links."""

from __future__ import annotations

import filecmp
import json
import os
import stat

import pytest

from tests.files import images
from tests.services.haven_server import HavenServer, run_cli as run


@pytest.fixture
def server(tmp_path):
    srv = HavenServer(tmp_path / "srv")
    folder = srv.home / "vms" / "web1"
    folder.mkdir(parents=True)
    tree = images.make_tree(tmp_path / "tree", 1)
    images.ext4(tree, folder / "vda.raw", 64 << 20)
    (folder / "vm.json").write_text(json.dumps({"name": "web1", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    srv.tree = tree
    srv.start()
    yield srv
    srv.stop()


def test_ls_get_find_through_the_cli(server, tmp_path):
    V = ["-s", "prod", "-v", "v1"]
    run(server, "subscription", "create", "--name", "prod")
    run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    run(server, "protection", "enable-for-vm", *V, "--vm", "web1")
    assert run(server, "protection", "backup-now", *V, "--vm", "web1", "--wait")["status"] in ("Completed", "CompletedWithWarnings")
    point = run(server, "recoverypoint", "list", *V, "--vm", "web1")[0]["id"]
    P = [*V, "--vm", "web1", "--rp-name", point]

    vols = run(server, "restore", "files", "volumes", *P)
    assert [(v["id"], v["filesystem"]) for v in vols["volumes"]] == [("disk", "ext4")]
    listing = run(server, "restore", "files", "ls", *P, "--disk", "vda", "--path", "/etc")
    want = sorted(p.name for p in (server.tree / "etc").iterdir())
    assert [e["name"] for e in listing["entries"]] == want
    link = next(e for e in listing["entries"] if e["name"] == "main.conf")
    assert (link["type"], link["target"]) == ("symlink", "nginx/nginx.conf")

    out = tmp_path / "out"
    for p in server.tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            rel = "/" + str(p.relative_to(server.tree))
            dest = out / rel.strip("/").replace("/", "__")
            got = run(server, "restore", "files", "get", *P, "--path", rel, "--target-folder", str(dest))
            assert (dest / p.name).read_bytes() == p.read_bytes(), rel
            assert got["bytes"] == p.stat().st_size
    # a folder: unpacked with modes, times, symlinks and hard links
    run(server, "restore", "files", "get", *P, "--path", "/etc", "--target-folder", str(tmp_path / "folder"))
    got = tmp_path / "folder" / "etc"
    for p in (server.tree / "etc").rglob("*"):
        q = got / p.relative_to(server.tree / "etc")
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
            continue
        assert stat.S_IMODE(q.stat().st_mode) == stat.S_IMODE(p.stat().st_mode) and int(q.stat().st_mtime) == int(p.stat().st_mtime), p
        if p.is_file():
            assert filecmp.cmp(p, q, shallow=False)
    assert os.path.samefile(got / "nginx.conf.hard", got / "nginx" / "nginx.conf")
    again = run(server, "restore", "files", "get", *P, "--path", "/etc", "--target-folder", str(tmp_path / "folder"), expect=2)
    assert "UserErrorDownloadTargetInvalid" in again.output  # never overwrites

    found = run(server, "restore", "files", "find", *V, "--vm", "web1", "--name", "*.conf", "--all-points")
    assert sorted(m["path"] for m in found["matches"]) == ["/etc/app.conf", "/etc/nginx/conf.d/site.conf", "/etc/nginx/nginx.conf"]
    missing = run(server, "restore", "files", "ls", *P, "--path", "/nope", expect=3)
    assert "UserErrorFileNotFound" in missing.output
    audit = run(server, "restore", "files", "downloads", *V, "--vm", "web1")
    assert audit[0]["path"] == "/etc" and audit[0]["kind"] == "folder"
    assert {a["status"] for a in audit} == {"Completed"}

"""Item 7 — hostile input: hostile names in every name the create routes accept and in path
parameters, oversized bodies, deep JSON, names the storage engine is handed, and compression bombs
in stored objects. Expect 4xx or typed errors, never a 5xx, never a file outside its target,
memory bounded."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from haven.engine import LocalBackend, Repository
from haven.engine.format import check_id
from haven.errors import HavenError

from .conftest import KEK, report

HOSTILE = [
    "../../../../tmp/haven-pwned", "..", ".", "/etc/passwd", "/tmp/haven-pwned", "a/../../b", "a\\..\\..\\b",
    "nul\x00byte", "x" * 5000, "ｖａｕｌｔ", "vаult",  # fullwidth, Cyrillic 'а' (look-alike of an existing name)
    "v\u200bault", "v\u202eault", "%2e%2e%2f%2e%2e%2fetc", "\n\r", " ", "", "con", "a" * 256,
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def test_hostile_names_in_api(api, core, home, tmp_path):
    assert api.post("/api/v1/subscriptions", json={"name": "prod"}).status_code == 201
    assert api.post("/api/v1/subscriptions/prod/vaults", json={"name": "vault", "region": "local"}).status_code == 201
    outside_before = _files(tmp_path) - _files(home)
    calls = 0
    for bad in HOSTILE:
        requests = [
            ("post", "/api/v1/subscriptions", {"name": bad}),
            ("post", "/api/v1/subscriptions/prod/vaults", {"name": bad, "region": "local"}),
            ("post", "/api/v1/subscriptions/prod/vaults", {"name": "ok-vault-1", "region": bad}),
            ("post", "/api/v1/subscriptions/prod/vaults/vault/items", {"vm": bad}),
            ("post", "/api/v1/subscriptions/prod/keyvaults", {"name": bad, "region": "local"}),
        ]
        for method, url, body in requests:
            r = getattr(api, method)(url, json=body)
            calls += 1
            assert r.status_code < 500, (url, bad, r.status_code, r.text[:300])
            if bad not in ("ｖａｕｌｔ",):  # may be accepted only if valid after normalisation
                assert r.status_code >= 400 or bad.isascii() and bad.replace("-", "").isalnum(), (url, repr(bad), r.status_code)
        from urllib.parse import quote

        for path in (f"/api/v1/subscriptions/{quote(bad, safe='')}/vaults", f"/api/v1/subscriptions/prod/vaults/{quote(bad, safe='')}",
                     f"/api/v1/subscriptions/prod/vaults/vault/items/{quote(bad, safe='')}/recovery-points"):
            r = api.get(path)
            calls += 1
            assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert _files(tmp_path) - _files(home) == outside_before, "a file appeared outside Haven's home"
    assert not Path("/tmp/haven-pwned").exists()
    report("hostile_api", requests=calls, server_errors=0, files_outside=0)


def test_oversized_and_deep_bodies(api):
    r = api.post("/api/v1/subscriptions", content=b'{"name": "' + b"a" * (32 << 20) + b'"}', headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.status_code
    deep = "[" * 100_000 + "]" * 100_000
    r = api.post("/api/v1/subscriptions", content=('{"name": ' + deep + "}").encode(), headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.status_code
    report("hostile_bodies", oversized=1, deep_json=1, server_errors=0)


def test_engine_refuses_hostile_object_and_id_names(tmp_path):
    backend = LocalBackend(tmp_path / "vault")
    backend.prepare()
    refused = 0
    harmless = {"con", "a" * 256, "x" * 5000}  # plain names: fine as object names (not as ids if too long)
    for bad in HOSTILE + ["chunks/../../x", "/abs", "a//b", "a/./b"]:
        if bad not in harmless:
            with pytest.raises(HavenError):
                backend.store(bad, b"x")
            refused += 1
        if bad != "con":
            with pytest.raises(HavenError):
                check_id(bad, "Item id")
            refused += 1
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} == {Path("vault")}
    report("hostile_engine_names", refused=refused)


BOMB = textwrap.dedent('''
    import io, os, resource, sys, zstandard
    from haven.engine import LocalBackend, LocalKeyWrapper, Repository
    from haven.engine.codec import DOMAIN_CHUNK, DOMAIN_MANIFEST
    from haven.engine.format import chunk_name
    from haven.errors import HavenError
    repo = Repository.init(LocalBackend(sys.argv[1]), LocalKeyWrapper(b"reliability-master-key-000000000"), {}, chunk_size=65536)
    size, declared, kind = int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=1, write_content_size=declared).stream_writer(buf, size=size if declared else -1, closefd=False) as w:
        zero = bytes(1 << 20)
        for _ in range(size >> 20):
            w.write(zero)
    body, header, nonce = buf.getvalue(), bytes((1, 1)), os.urandom(12)
    if kind == "chunk":
        cid = bytes(range(32))
        aad, name = header + DOMAIN_CHUNK + cid, chunk_name(cid)
    else:
        aad, name = header + DOMAIN_MANIFEST + b"vm/p1", "points/vm/p1"
    repo.backend.store(name, header + nonce + repo.codec._aead.encrypt(nonce, body, aad))
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    try:
        repo.load_chunk(cid) if kind == "chunk" else repo.load_point("vm", "p1")
        print("OPENED")
    except HavenError as exc:
        print("TYPED", exc.code)
    except MemoryError:
        print("MEMORYERROR")
    print("MAXRSS_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
''')


def _bomb(tmp_path: Path, size: int, declared: bool, kind: str) -> str:
    proc = subprocess.run([sys.executable, "-c", BOMB, str(tmp_path / f"v-{kind}-{declared}"), str(size), "1" if declared else "0", kind],
                          capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr[-1000:]


def test_compression_bomb_without_declared_size_fails_typed(tmp_path):
    out = _bomb(tmp_path, 4 << 30, False, "chunk")
    assert "TYPED StorageErrorChunkCorrupt" in out, out
    report("compression_bomb_undeclared", expanded_to="4GiB", outcome="typed")


@pytest.mark.parametrize("kind", ["chunk", "manifest"])
def test_compression_bomb_with_declared_size_fails_typed_in_bounded_memory(tmp_path, kind):
    out = _bomb(tmp_path, 4 << 30, True, kind)
    assert "TYPED" in out, out


def test_nul_byte_in_vm_name_is_4xx(api, core):
    assert api.post("/api/v1/subscriptions", json={"name": "prod"}).status_code == 201
    assert api.post("/api/v1/subscriptions/prod/vaults", json={"name": "vault", "region": "local"}).status_code == 201
    r = api.post("/api/v1/subscriptions/prod/vaults/vault/items", json={"vm": "nul\x00byte"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    r = api.get("/api/v1/subscriptions/nul%00byte/vaults")
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def _outside(tmp_path: Path, *inside: Path) -> set[Path]:
    return {p for p in _files(tmp_path) if not any(p == d or d in p.parents for d in inside)}


@pytest.fixture
def rooted_core(home, tmp_path, db_url, clock):
    """A server whose restores may write only under ``tmp_path/targets`` (``restore_roots``)."""
    from haven.config import RegionConfig, load_settings
    from haven.services.core import Haven

    settings = load_settings(home, database_url=db_url, regions=(RegionConfig("local", f"file://{home / 'storage' / 'local'}"),),
                             restore_roots=(tmp_path / "targets",))
    app = Haven(settings, clock=clock)
    yield app
    app.close()


def test_hostile_restore_targets(rooted_core, home, tmp_path):
    """Restore targets and new VM names from the API: hostile ones, and folders outside
    ``restore_roots`` (also through a symlinked folder), are 4xx; planted symlinks are never written
    through; a file that appears under a disk's name after the restore was queued is never replaced.
    Every restored disk that is written is byte-identical."""
    from fastapi.testclient import TestClient

    from haven.api.app import create_app
    from tests.restore.conftest import World, same_bytes

    core = rooted_core
    world = World(core, home)
    world.setup()
    assert world.backup()["status"] in ("Completed", "CompletedWithWarnings")  # stopped VM: crash-consistent
    point = world.points()[0]["id"]
    base = f"/api/v1/subscriptions/prod/vaults/v1/items/web1/recovery-points/{point}"
    precious = tmp_path / "outside"
    precious.mkdir()
    victims = {n: precious / n for n in ("victim-final", "victim-partial", "victim-raw-partial")}
    for v in list(victims.values())[1:]:
        v.write_bytes(b"precious")
    work = tmp_path / "targets"
    work.mkdir()
    (work / "escape").symlink_to(precious, target_is_directory=True)
    before = _outside(tmp_path, home, work)
    calls = 0
    with TestClient(create_app(core), raise_server_exceptions=False) as api:
        api.headers["Authorization"] = f"Bearer {world.token}"
        existing_file = tmp_path / "a-file"
        existing_file.write_bytes(b"x")
        before.add(existing_file)
        for bad in HOSTILE + ["relative/dir", "/tmp/a/../b", str(existing_file), str(precious), str(work / "escape" / "in")]:
            for url, body in ((f"{base}/restore-disks", {"target": bad}),
                              (f"{base}/restore-disks", {"target": str(work / "h"), "host": bad}),
                              (f"{base}/restore-vm", {"target_vm_name": bad if bad != "con" else "../con"}),  # "con" is a fine VM name
                              (f"{base}/restore-vm", {"target_vm_name": "fresh", "target": bad})):
                r = api.post(url, json=body)
                calls += 1
                assert 400 <= r.status_code < 500, (url, repr(bad)[:80], r.status_code, r.text[:300])

        # a dangling symlink under a disk's name: refused up front, its target never created
        t1 = work / "t1"
        t1.mkdir()
        (t1 / "vda.raw").symlink_to(victims["victim-final"])
        r = api.post(f"{base}/restore-disks", json={"target": str(t1)})
        assert r.status_code == 400 and r.json()["error"]["code"] == "UserErrorRestoreTargetInvalid", r.text

        # symlinks planted under the restore's temporary names: replaced, never followed
        t2 = work / "t2"
        t2.mkdir()
        (t2 / ".vda.raw.partial").symlink_to(victims["victim-partial"])
        (t2 / ".vda.raw.partial.partial").symlink_to(victims["victim-raw-partial"])
        r = api.post(f"{base}/restore-disks", json={"target": str(t2), "disks": ["vda"]})
        assert r.status_code == 202, r.text
        world.ok(r.json())
        assert not (t2 / "vda.raw").is_symlink() and same_bytes(t2 / "vda.raw", world.vm_folder / "vda.raw")

        # a file that appears after the restore was queued is never replaced; nothing is left behind
        t3 = work / "t3"
        r = api.post(f"{base}/restore-disks", json={"target": str(t3)})
        assert r.status_code == 202, r.text
        t3.mkdir()
        (t3 / "vdc.raw").write_bytes(b"mine")
        job = world.run(r.json()["id"])
        assert job["status"] == "Failed" and job["error"]["code"] == "UserErrorRestoreTargetInvalid", job
        assert sorted(p.name for p in t3.iterdir()) == ["vdc.raw"] and (t3 / "vdc.raw").read_bytes() == b"mine"

    for v in list(victims.values())[1:]:
        assert v.read_bytes() == b"precious"
    assert not victims["victim-final"].exists()
    assert _outside(tmp_path, home, work) == before, "a file appeared or vanished outside the restore targets"
    assert not Path("/tmp/haven-pwned").exists()
    report("hostile_restore_targets", requests=calls, server_errors=0, symlinks_followed=0, files_replaced=0, files_outside=0)


def test_a_manifest_naming_a_disk_with_a_path_is_refused():
    from haven.engine.format import DiskManifest

    for bad in ("../../etc/x", "/abs", "a/b", "", "nul\x00", 7):
        with pytest.raises(ValueError):
            DiskManifest.from_json({"name": bad, "size": 0, "format": "raw", "chunk_size": 1 << 20, "chunks": ""})

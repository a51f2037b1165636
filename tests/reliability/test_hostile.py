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

"""A vault's storage stays a vault: names and listing prefixes never leave it, a folder vault
cannot be walked out of, the storage endpoint refuses oversized bodies before reading them, and a
data key opens only the vault it is bound to."""

from __future__ import annotations

import base64
import json
import os
import socket
from urllib.parse import urlparse

import httpx
import pytest

from haven.engine import LocalBackend, LocalKeyWrapper, Repository
from haven.engine.backend import check_prefix
from haven.engine.errors import DataKeyBindingMismatch, InvalidObjectName

from .conftest import MASTER, TOKEN


@pytest.mark.parametrize("prefix", ["../", "..", "/etc/ss", "/", "a/../..", "points//x", "./", "chunks/../../"])
def test_listing_prefixes_are_checked_like_names(prefix):
    with pytest.raises(InvalidObjectName):
        check_prefix(prefix)


@pytest.mark.parametrize("prefix", ["", "points/", "points/vm1/p", "chunks/ab/", "config", "locks/"])
def test_listing_prefixes_inside_the_vault_are_accepted(prefix):
    assert check_prefix(prefix) == prefix


def test_local_backend_cannot_leave_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"master key")
    (tmp_path / "neighbour").write_bytes(b"x")
    vault = LocalBackend(tmp_path / "vault")
    vault.prepare()
    vault.store("config", b"c")
    for prefix in ("../", "/etc/ss", "..", "../outside/"):
        with pytest.raises(InvalidObjectName):
            list(vault.list(prefix))
    for name in ("../neighbour", "/etc/passwd", "chunks/../../neighbour"):
        with pytest.raises(InvalidObjectName):
            vault.load(name)
    # a symlink planted inside the vault folder does not lead out of it either
    os.symlink(outside, tmp_path / "vault" / "chunks")
    with pytest.raises(InvalidObjectName):
        vault.load("chunks/secret")
    with pytest.raises(InvalidObjectName):
        vault.store("chunks/new", b"x")
    with pytest.raises(InvalidObjectName):
        vault.delete("chunks/secret")
    with pytest.raises(InvalidObjectName):
        list(vault.list("chunks/"))
    os.symlink(outside / "secret", tmp_path / "vault" / "leak")
    with pytest.raises(InvalidObjectName):
        vault.load("leak")
    assert (outside / "secret").read_bytes() == b"master key" and not (outside / "new").exists()
    assert vault.load("config") == b"c" and {o.name for o in vault.list("")} >= {"config"}


@pytest.mark.parametrize("prefix", ["../", "/etc/ss", "../../"])
def test_the_storage_endpoint_refuses_a_prefix_that_leaves_the_vault(haven_endpoint, prefix):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(f"{haven_endpoint}/storage/v1/vaults/v-list/prepare", headers=auth)
    r = httpx.get(f"{haven_endpoint}/storage/v1/vaults/v-list/objects", params={"prefix": prefix}, headers=auth)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "UserErrorInvalidObjectName" and "objects" not in r.json()


def _raw_put(base: str, path: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, dict]:
    """Send a PUT's headers only (no body follows) and read the answer."""
    u = urlparse(base)
    lines = [f"PUT {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(_header(data, b"content-length") or 0):
            piece = sock.recv(65536)  # socket.timeout here: the server waits for the body it should have refused
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body or b"{}")


def _header(data: bytes, name: bytes) -> bytes | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_an_oversized_put_is_refused_before_its_body_is_read(haven_endpoint):
    path = "/storage/v1/vaults/v-big/objects/chunks/ab/" + "ab" * 32
    status, body = _raw_put(haven_endpoint, path, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(1 << 30)})
    assert status == 413 and body["error"]["code"] == "UserErrorStorageObjectTooLarge"
    # without credentials: 401, also without reading anything
    status, body = _raw_put(haven_endpoint, path, {"Content-Length": str(1 << 30)})
    assert status == 401


def test_a_streamed_body_is_cut_off_at_the_cap(haven_endpoint, monkeypatch):
    from haven.services import objects

    monkeypatch.setattr(objects, "MAX_OBJECT", 1 << 20)  # the cap is read at request time
    name = "chunks/cd/" + "cd" * 32
    u = urlparse(haven_endpoint)
    head = (f"PUT /storage/v1/vaults/v-big/objects/{name} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"\0" * (256 << 10)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(12):  # 3 MiB, no Content-Length
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before taking all of it
            pass
        answer = b""
        while b"}}" not in answer:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"UserErrorStorageObjectTooLarge" in answer
    r = httpx.head(f"{haven_endpoint}/storage/v1/vaults/v-big/objects/{name}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404  # nothing stored


def test_a_wrapped_data_key_opens_only_its_own_vault(tmp_path):
    kek = LocalKeyWrapper(MASTER)  # one KEK for both vaults, as the server's master key is
    a = Repository.init(LocalBackend(tmp_path / "a"), kek, {"name": "a"})
    b = Repository.init(LocalBackend(tmp_path / "b"), kek, {"name": "b"})
    assert a.config["key"]["format"] == 2 and a.config["key"]["version"] == 1
    # vault B's wrapped key put into vault A's config (by someone with write access to A's storage)
    config = json.loads((tmp_path / "a" / "config").read_bytes())
    config["key"] = b.config["key"]
    (tmp_path / "a" / "config").write_text(json.dumps(config))
    with pytest.raises(DataKeyBindingMismatch) as e:
        Repository.open(LocalBackend(tmp_path / "a"), kek)
    assert e.value.code == "UserErrorDataKeyNotOfThisVault" and a.config["vault_uuid"] in e.value.text
    # and the bound payload itself names the vault: unwrapped, it is not a bare key
    payload = kek.unwrap(base64.b64decode(b.config["key"]["wrapped"]))
    assert b.config["vault_uuid"].encode() in payload and len(payload) > 32


def test_a_rewrap_bumps_the_key_version_and_keeps_the_data(tmp_path, kek):
    repo = Repository.init(LocalBackend(tmp_path / "v"), kek, {"name": "v"})
    repo.store_sealed("meta/x", b"m", b"x", b"payload")
    other = LocalKeyWrapper(b"another-master-key-0123456789abc")
    repo.rewrap(other, kek)
    assert repo.config["key"]["version"] == 2
    again = Repository.open(LocalBackend(tmp_path / "v"), other)
    assert again.load_sealed("meta/x", b"m", b"x") == b"payload"

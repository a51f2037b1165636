"""haven keyvault … against a running server (SQLite): create, keys, secrets, set-policy, backup and restore."""

from __future__ import annotations

import base64
import json
import os

import pytest

from tests.services.haven_server import HavenServer, run_cli as run


@pytest.fixture
def server(tmp_path):
    srv = HavenServer(tmp_path / "srv").start()
    yield srv
    srv.stop()



def test_keyvault_cli(server, tmp_path):
    run(server, "subscription", "create", "--name", "prod")
    S = ("-s", "prod")
    assert run(server, "keyvault", "create", *S, "--name", "kv1", "--region", "local")["name"] == "kv1"
    bad = run(server, "keyvault", "create", *S, "--name", "1x", "--region", "local", expect=2)
    assert "UserErrorKeyVaultNameInvalid" in bad.output
    assert [v["name"] for v in run(server, "keyvault", "list", *S)] == ["kv1"]
    key = run(server, "keyvault", "key", "create", *S, "--vault-name", "kv1", "--name", "kek", "--kty", "RSA", "--size", "3072")
    assert key["kty"] == "RSA" and key["size"] == 3072
    disk_key = tmp_path / "disk.key"
    disk_key.write_bytes(os.urandom(64))
    wrapped = run(server, "keyvault", "key", "wrap", *S, "--vault-name", "kv1", "--name", "kek", "--file", str(disk_key))
    plain = run(server, "keyvault", "key", "unwrap", *S, "--vault-name", "kv1", "--name", "kek", "--value", wrapped["value"])
    assert base64.urlsafe_b64decode(plain["value"] + "==") == disk_key.read_bytes()
    run(server, "keyvault", "secret", "set", *S, "--vault-name", "kv1", "--name", "vm1-bek", "--value", wrapped["value"],
        "--tags", json.dumps({"kek": wrapped["kid"], "alg": wrapped["alg"]}))
    assert run(server, "keyvault", "secret", "show", *S, "--vault-name", "kv1", "--name", "vm1-bek")["value"] == wrapped["value"]
    policy = run(server, "keyvault", "set-policy", *S, "--name", "kv1", "--principal", "Backup Management Service", "--template", "Haven Backup")
    assert policy["key_permissions"] == ["get", "list", "backup"]
    explicit = run(server, "keyvault", "set-policy", *S, "--name", "kv1", "--principal", "Backup Management Service",
                   "--key-permissions", "get,list", "--secret-permissions", "get")
    assert explicit["secret_permissions"] == ["get"]
    blob = tmp_path / "kek.blob"
    run(server, "keyvault", "key", "backup", *S, "--vault-name", "kv1", "--name", "kek", "--file", str(blob))
    run(server, "keyvault", "key", "delete", *S, "--vault-name", "kv1", "--name", "kek")
    assert run(server, "keyvault", "key", "list", *S, "--vault-name", "kv1") == []
    run(server, "keyvault", "key", "purge", *S, "--vault-name", "kv1", "--name", "kek")
    run(server, "keyvault", "key", "restore", *S, "--vault-name", "kv1", "--file", str(blob))
    again = run(server, "keyvault", "key", "unwrap", *S, "--vault-name", "kv1", "--name", "kek", "--value", wrapped["value"])
    assert again["value"] == plain["value"]
    shown = run(server, "keyvault", "show", *S, "--name", "kv1")
    assert "Backup Management Service" in {p["principal"] for p in shown["access_policies"]}
    run(server, "keyvault", "delete", *S, "--name", "kv1")
    assert [v["name"] for v in run(server, "keyvault", "list-deleted", *S)] == ["kv1"]
    run(server, "keyvault", "recover", *S, "--name", "kv1")

"""Key vaults, keys, secrets, soft delete, purge protection and single-object backups, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pytest
from sqlalchemy import select

from haven.keyvault import errors as E
from haven.keyvault.crypto import Sealer, b64d, b64e
from haven.keyvault.tables import KvKey, KvSecret


def test_names_regions_and_listing(kvs, root):
    for bad in ("ab", "1vault", "a" * 25, "kv_1", "kv--x", "kv-"):
        with pytest.raises(E.KeyVaultNameInvalid):
            kvs.create(root, "prod", bad, "local")
    kv = kvs.create(root, "prod", "kv-prod-01", "local")
    assert kv["region"] == "local" and kv["soft_delete_retention_days"] == 90
    assert kv["access_policies"][0]["principal"] == "local-owner"  # the creator gets every permission
    with pytest.raises(E.KeyVaultExists):
        kvs.create(root, "prod", "kv-prod-01", "local")
    with pytest.raises(E.RetentionInvalid):
        kvs.create(root, "prod", "kv-2", "local", retention_days=5)
    from haven.services.subscriptions import RegionNotFound
    with pytest.raises(RegionNotFound):
        kvs.create(root, "prod", "kv-2", "mars")
    assert [v["name"] for v in kvs.list(root, "prod")] == ["kv-prod-01"]


def test_keys_wrap_unwrap_and_never_leave(kvs, root, core):
    kvs.create(root, "prod", "kv1", "local")
    rsa = kvs.create_key(root, "prod", "kv1", "kek-rsa", "RSA", 3072)
    aes = kvs.create_key(root, "prod", "kv1", "kek-aes", "AES", 256)
    assert rsa["size"] == 3072 and "PUBLIC KEY" in rsa["public_key_pem"] and "material" not in rsa
    with pytest.raises(E.KeyTypeInvalid):
        kvs.create_key(root, "prod", "kv1", "weak", "RSA", 1024)
    data = os.urandom(64)
    for name, alg in (("kek-rsa", "RSA-OAEP-256"), ("kek-rsa", "RSA-OAEP"), ("kek-aes", "A256KW")):
        w = kvs.wrap(root, "prod", "kv1", name, data, alg)
        assert w["alg"] == alg and b64d(w["value"]) != data
        assert b64d(kvs.unwrap(root, "prod", "kv1", name, b64d(w["value"]), alg)["value"]) == data
    with pytest.raises(E.AlgorithmInvalid):
        kvs.wrap(root, "prod", "kv1", "kek-aes", data, "RSA-OAEP")
    # a wrong KEK fails closed: nothing comes back
    w = kvs.wrap(root, "prod", "kv1", "kek-aes", data)
    other = kvs.create_key(root, "prod", "kv1", "other-aes", "AES")
    with pytest.raises(E.UnwrapFailed) as exc:
        kvs.unwrap(root, "prod", "kv1", "other-aes", b64d(w["value"]))
    assert exc.value.code == "UserErrorKeyUnwrapFailed" and other["name"] in exc.value.text
    tampered = bytearray(b64d(w["value"]))
    tampered[5] ^= 1
    with pytest.raises(E.UnwrapFailed):
        kvs.unwrap(root, "prod", "kv1", "kek-aes", bytes(tampered))
    # key material at rest is sealed: the raw row holds no key bytes in clear
    with core.db.session() as s:
        row = s.scalar(select(KvKey).where(KvKey.name == "kek-aes"))
        assert row.material[:1] == b"\x01" and len(row.material) == 1 + 12 + 32 + 16


def test_key_versions_rotate(kvs, root):
    kvs.create(root, "prod", "kv1", "local")
    v1 = kvs.create_key(root, "prod", "kv1", "kek", "AES")
    w = kvs.wrap(root, "prod", "kv1", "kek", b"k" * 32)
    v2 = kvs.create_key(root, "prod", "kv1", "kek", "AES")
    assert v1["version"] != v2["version"]
    assert kvs.show_key(root, "prod", "kv1", "kek")["versions"] == [v1["version"], v2["version"]]
    with pytest.raises(E.UnwrapFailed):  # the newest version did not wrap it
        kvs.unwrap(root, "prod", "kv1", "kek", b64d(w["value"]))
    assert b64d(kvs.unwrap(root, "prod", "kv1", "kek", b64d(w["value"]), version=v1["version"])["value"]) == b"k" * 32
    wrapper = kvs.key_wrapper("prod", "kv1", "kek")
    blob = wrapper.wrap(b"d" * 32)
    kvs.create_key(root, "prod", "kv1", "kek", "AES")  # rotate: old wraps still open
    assert wrapper.unwrap(blob) == b"d" * 32


def test_secrets_are_sealed_at_rest(kvs, root, core):
    kvs.create(root, "prod", "kv1", "local")
    kvs.set_secret(root, "prod", "kv1", "db-password", "hunter2-very-secret", content_type="text/plain")
    assert kvs.show_secret(root, "prod", "kv1", "db-password")["value"] == "hunter2-very-secret"
    assert "value" not in kvs.list_secrets(root, "prod", "kv1")[0]
    with core.db.session() as s:
        row = s.scalar(select(KvSecret))
        assert b"hunter2" not in row.value
        # a sealed value moved to another row does not open
        with pytest.raises(Exception):
            kvs.sealer.open(row.value, "secret", row.vault_id, "other-name", row.version)


def test_soft_delete_recover_purge_and_purge_protection(kvs, root, clock):
    kvs.create(root, "prod", "kv1", "local", retention_days=7)
    kvs.create_key(root, "prod", "kv1", "kek", "AES")
    kvs.set_secret(root, "prod", "kv1", "bek", "x")
    deleted = kvs.delete_key(root, "prod", "kv1", "kek")
    assert deleted["scheduled_purge_at"] == clock.now() + timedelta(days=7)
    assert kvs.list_keys(root, "prod", "kv1") == [] and kvs.list_keys(root, "prod", "kv1", deleted=True)[0]["name"] == "kek"
    with pytest.raises(E.ObjectDeletedConflict):
        kvs.create_key(root, "prod", "kv1", "kek", "AES")
    kvs.recover_key(root, "prod", "kv1", "kek")
    assert kvs.show_key(root, "prod", "kv1", "kek")["name"] == "kek"
    kvs.delete_secret(root, "prod", "kv1", "bek")
    kvs.purge_secret(root, "prod", "kv1", "bek")
    assert kvs.list_secrets(root, "prod", "kv1", deleted=True) == []
    # retention passes: a deleted key is purged by itself
    kvs.delete_key(root, "prod", "kv1", "kek")
    clock.advance(timedelta(days=8))
    assert kvs.list_keys(root, "prod", "kv1", deleted=True) == []
    # purge protection: nothing purged by hand, and it cannot be turned off
    kvs.create(root, "prod", "kv-locked", "local", purge_protection=True)
    kvs.create_key(root, "prod", "kv-locked", "kek", "AES")
    kvs.delete_key(root, "prod", "kv-locked", "kek")
    with pytest.raises(E.PurgeProtected):
        kvs.purge_key(root, "prod", "kv-locked", "kek")
    with pytest.raises(E.PurgeProtectionIrreversible):
        kvs.update(root, "prod", "kv-locked", purge_protection=False)
    kvs.delete(root, "prod", "kv-locked")
    with pytest.raises(E.PurgeProtected):
        kvs.purge(root, "prod", "kv-locked")
    with pytest.raises(E.KeyVaultExists):
        kvs.create(root, "prod", "kv-locked", "local")
    assert kvs.recover(root, "prod", "kv-locked")["name"] == "kv-locked"
    kvs.delete(root, "prod", "kv1")
    kvs.purge(root, "prod", "kv1")
    assert [v["name"] for v in kvs.list(root, "prod")] == ["kv-locked"]


def test_single_key_and_secret_backup_restore(kvs, root, core, home):
    kvs.create(root, "prod", "kv1", "local")
    kvs.create(root, "prod", "kv2", "local")
    kvs.create_key(root, "prod", "kv1", "kek", "RSA")
    wrapped = kvs.wrap(root, "prod", "kv1", "kek", b"disk-key" * 4)
    kvs.set_secret(root, "prod", "kv1", "bek", "s3cr3t")
    kb = kvs.backup_key(root, "prod", "kv1", "kek")["value"]
    sb = kvs.backup_secret(root, "prod", "kv1", "bek")["value"]
    assert b"s3cr3t" not in base64.urlsafe_b64decode(sb.split(".", 2)[2] + "==")
    with pytest.raises(E.ObjectExists):  # a different key of that name? no: the same key -> idempotent
        kvs.create_key(root, "prod", "kv2", "kek", "AES")
        kvs.restore_key(root, "prod", "kv2", kb)
    kvs.delete_key(root, "prod", "kv2", "kek")
    kvs.purge_key(root, "prod", "kv2", "kek")
    restored = kvs.restore_key(root, "prod", "kv2", kb)
    assert restored["name"] == "kek" and restored["kty"] == "RSA"
    assert b64d(kvs.unwrap(root, "prod", "kv2", "kek", b64d(wrapped["value"]))["value"]) == b"disk-key" * 4
    kvs.restore_secret(root, "prod", "kv2", sb)
    assert kvs.show_secret(root, "prod", "kv2", "bek")["value"] == "s3cr3t"
    # restoring onto the same object is idempotent
    kvs.restore_key(root, "prod", "kv1", kb)
    # a blob of another kind, another server (master key), or altered, is refused
    with pytest.raises(E.BackupBlobInvalid):
        kvs.restore_key(root, "prod", "kv2", sb)
    foreign = Sealer(os.urandom(32)).seal_blob("key", {"name": "x"})
    with pytest.raises(E.BackupBlobInvalid):
        kvs.restore_key(root, "prod", "kv2", foreign)
    with pytest.raises(E.BackupBlobInvalid):
        kvs.restore_key(root, "prod", "kv2", kb[:-4] + b64e(b"xyz"))

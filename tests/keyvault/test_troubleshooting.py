"""The five rows of seed 003's troubleshooting table, reproduced through the service: code, message, fix.
Plus the configure-backup flow: a VM protected before it was encrypted fails until the permission is given."""

from __future__ import annotations

import os

import pytest

from haven.keyvault import errors as E
from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE


WHERE = {"subscription": "prod", "vault": "v1", "vm": "vm1", "point": "p1", "region": "local"}


def _encrypted_vm(kvs, root, kv="kv1"):
    kvs.create(root, "prod", kv, "local")
    kvs.create_key(root, "prod", kv, "vm1-kek", "RSA")
    kvs.set_bek(root, "prod", kv, "vm1-bek", os.urandom(64), kek="vm1-kek")
    return {"method": "luks", "key_vault": kv, "bek_secret": "vm1-bek", "kek_key": "vm1-kek", "vm": "vm1"}


def test_row1_backup_refused_for_bek_alone(kvs, root):
    enc = _encrypted_vm(kvs, root)
    bek_only = {k: v for k, v in enc.items() if k != "kek_key"}
    with pytest.raises(E.BekOnlyEncryption) as exc:
        kvs.check_backup_access(bek_only, "prod")
    e = exc.value
    assert e.code == "UserErrorEncryptedVmBekOnly" and e.http_status == 400
    assert e.text == ("Validation failed because the VM 'vm1' is encrypted with BEK alone. "
                      "Backup can be enabled only for VMs encrypted with both BEK and KEK.")
    assert e.fix.startswith("The VM should be encrypted with both BEK and KEK. Decrypt the VM first, then encrypt it again")
    assert "Once the VM is encrypted with BEK and KEK, enable backup." in e.fix
    with pytest.raises(E.BekOnlyEncryption):
        kvs.backup_keys(bek_only, "prod")


def test_row5_backup_service_without_key_vault_permissions_then_granted(kvs, root):
    enc = _encrypted_vm(kvs, root)
    # protected before encryption: every backup fails with the same message until the permission is given
    for _ in range(2):
        with pytest.raises(E.BackupServiceKeyVaultAccessDenied) as exc:
            kvs.check_backup_access(enc, "prod")
    e = exc.value
    assert e.code == "UserErrorKeyVaultPermissionsNotConfigured" and e.http_status == 403
    assert e.text.startswith("The Haven backup service does not have sufficient key vault permissions to back up encrypted VMs")
    assert "keys:get, keys:list, keys:backup, secrets:get, secrets:list, secrets:backup" in e.text
    assert "The VM should be encrypted with BEK and KEK; then enable backup." in e.fix
    assert "haven keyvault set-policy --name kv1 --principal \"Backup Management Service\" --template \"Haven Backup\"" in e.fix
    # a partial grant is still not enough, and says what is missing
    kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, key_permissions=["get", "list", "backup"], secret_permissions=["get"])
    with pytest.raises(E.BackupServiceKeyVaultAccessDenied) as exc:
        kvs.check_backup_access(enc, "prod")
    assert "missing: secrets:list, secrets:backup" in exc.value.text
    granted = kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    assert granted == {"principal": BACKUP_PRINCIPAL, "key_permissions": ["get", "list", "backup"],
                       "secret_permissions": ["get", "list", "backup"]}
    assert kvs.check_backup_access(enc, "prod") is None
    backup = kvs.backup_keys(enc, "prod")
    assert backup["format"] == "haven-vm-keys/1" and backup["kek_key"] == "vm1-kek" and backup["bek_secrets"] == ["vm1-bek"]
    assert kvs.check_backup_access(None) is None and kvs.backup_keys(None) is None  # not encrypted: nothing to do


def test_row2_restore_when_the_key_vault_does_not_exist(kvs, root):
    enc = _encrypted_vm(kvs, root)
    kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    backup = kvs.backup_keys(enc, "prod")
    kvs.delete(root, "prod", "kv1")
    kvs.purge(root, "prod", "kv1")
    with pytest.raises(E.KeyVaultMissingForRestore) as exc:
        kvs.check_restore(enc, "prod", WHERE)
    e = exc.value
    assert e.code == "UserErrorKeyVaultNotFoundForRestore" and e.http_status == 404
    assert e.text == "You cannot restore this encrypted VM because the key vault 'kv1' associated with this VM does not exist."
    assert e.fix.startswith("Create a key vault: 'haven keyvault create -s prod --name kv1 --region local'")
    assert "'haven keyvault restore-key -s prod --vault-name kv1 --vault v1 --vm vm1 --rp-name p1'" in e.fix
    assert "'haven keyvault restore-secret -s prod --vault-name kv1 --vault v1 --vm vm1 --rp-name p1'" in e.fix
    with pytest.raises(E.KeyVaultMissingForRestore):  # restoring keys needs the vault first
        kvs.restore_keys_from_backup(backup)
    # the fix works: create the key vault, restore the keys and secrets, the restore goes on
    kvs.create(root, "prod", "kv1", "local")
    with pytest.raises(E.KeysMissingForRestore):
        kvs.check_restore(enc, "prod")
    kvs.restore_keys_from_backup(backup, caller=root, subscription="prod")
    assert kvs.check_restore(enc, "prod") is None


def test_row3_restore_when_keys_and_secrets_do_not_exist(kvs, root):
    enc = _encrypted_vm(kvs, root)
    kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    backup = kvs.backup_keys(enc, "prod")
    kvs.delete_key(root, "prod", "kv1", "vm1-kek")
    kvs.delete_secret(root, "prod", "kv1", "vm1-bek")
    with pytest.raises(E.KeysMissingForRestore) as exc:
        kvs.check_restore(enc, "prod", WHERE)
    e = exc.value
    assert e.code == "UserErrorKeysAndSecretsNotFoundForRestore" and e.http_status == 404
    assert e.text.startswith("You cannot restore this encrypted VM because the keys and secrets associated with this VM do not exist")
    assert "missing: key vm1-kek, secret vm1-bek" in e.text
    assert e.fix.startswith("Restore the keys and secrets if they do not exist.")
    assert "'haven keyvault restore-key -s prod --vault-name kv1 --vault v1 --vm vm1 --rp-name p1'" in e.fix
    assert "{" not in e.fix and "<" not in e.fix  # every command filled in
    out = kvs.restore_keys_from_backup(backup)  # the server's own restore (soft-deleted ones are recovered)
    assert [k["name"] for k in out["keys"]] == ["vm1-kek"] and [s["name"] for s in out["secrets"]] == ["vm1-bek"]
    assert kvs.check_restore(enc, "prod") is None


def test_row4_backup_service_has_no_access_to_create_the_vm(kvs, root):
    enc = _encrypted_vm(kvs, root)
    kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    with pytest.raises(E.BackupServiceNoAccessForRestore) as exc:
        kvs.check_restore_vm(enc, "prod")
    e = exc.value
    assert e.code == "UserErrorBackupServiceNoAccessToSubscription" and e.http_status == 403
    assert e.text == "The backup service does not have access to resources in your subscription 'prod', so it cannot create the VM."
    assert e.fix.startswith("As described above, first restore the disks: 'haven restore restore-disks -s prod")
    assert "Then create the VM from the restored disks yourself with the CLI or the API" in e.fix
    assert kvs.check_restore(enc, "prod") is None  # restoring the disks is allowed
    kvs.check_restore_vm(None)  # unencrypted VMs are not concerned


def test_encryption_settings_forms(kvs, root):
    from haven.services.keyvault import parse_encryption

    p = parse_encryption({"bek_secret": "kv1/secrets/b/v1", "kek_key": "kv1/keys/k"})
    assert p["key_vault"] == "kv1" and p["beks"] == [("b", "v1")] and p["kek"] == ("k", None)
    assert parse_encryption(None) is None and parse_encryption({"method": "luks"}) is None
    with pytest.raises(E.EncryptionSettingsInvalid):
        parse_encryption({"bek_secret": "b"})  # no key vault
    with pytest.raises(E.EncryptionSettingsInvalid):
        parse_encryption({"bek_secret": "kv1/secrets/b", "kek_key": "kv2/keys/k"})

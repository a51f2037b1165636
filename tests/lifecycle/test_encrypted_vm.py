"""Seed 003 end to end: an image-folder VM whose disk is LUKS, its BEK wrapped by a KEK in the key
vault, backed up with its keys, the keys lost, the restore refused with the seed's message, the keys
brought back from the recovery point, and the restored disk opening with the restored key."""

import json
import os
import subprocess

import pytest

from haven.keyvault import errors as KE
from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE
from tests.foundation.helpers import register_local_host
from tests.services._util import require_binary

ENC = {"method": "luks", "key_vault": "kv-disks", "bek_secret": "web1-bek", "kek_key": "web1-kek"}


def _luks_vm(vms, disk_key: bytes, encryption: dict | None):
    cryptsetup = require_binary("cryptsetup")
    folder = vms / "web1"
    folder.mkdir(parents=True)
    key_file = folder.parent / "bek.tmp"
    key_file.write_bytes(disk_key)
    with open(folder / "vda.raw", "wb") as fh:
        fh.truncate(24 << 20)
    subprocess.run([cryptsetup, "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                    "--key-file", str(key_file), str(folder / "vda.raw")], check=True, capture_output=True)
    key_file.unlink()
    _define(folder, encryption)
    return folder


def _define(folder, encryption):
    definition = {"name": "web1", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}
    if encryption:
        definition["encryption"] = encryption
    (folder / "vm.json").write_text(json.dumps(definition))


def _opens(image, key: bytes, tmp_path) -> bool:
    kf = tmp_path / "try.key"
    kf.write_bytes(key)
    r = subprocess.run(["cryptsetup", "luksOpen", "--test-passphrase", "--key-file", str(kf), str(image)], capture_output=True)
    kf.unlink()
    return r.returncode == 0


@pytest.fixture
def encrypted(world, core):
    core.subscriptions.create(world.owner, "prod")
    core.vaults.create(world.owner, "prod", "v1", "local")
    kv = core.keyvault
    kv.create(world.owner, "prod", "kv-disks", "local", purge_protection=False)
    kv.create_key(world.owner, "prod", "kv-disks", "web1-kek", "RSA")
    disk_key = os.urandom(64)
    kv.set_bek(world.owner, "prod", "kv-disks", "web1-bek", disk_key, kek="web1-kek")
    return disk_key


def test_bek_alone_and_missing_permissions_are_refused_with_the_seed_fix(world, core, encrypted):
    folder = _luks_vm(world.home / "vms", encrypted, {k: v for k, v in ENC.items() if k != "kek_key"})
    register_local_host(core, world.home / "vms")
    with pytest.raises(KE.BekOnlyEncryption) as bek_only:
        core.protection.enable(world.owner, "prod", "v1", "web1")
    assert "BEK" in bek_only.value.text and "KEK" in bek_only.value.text and bek_only.value.fix
    _define(folder, ENC)
    register_local_host(core, world.home / "vms")
    with pytest.raises(KE.BackupServiceKeyVaultAccessDenied) as denied:
        core.protection.enable(world.owner, "prod", "v1", "web1")
    assert BACKUP_PRINCIPAL in denied.value.fix and BACKUP_TEMPLATE in denied.value.fix
    assert core.protection.list_items(world.owner, "prod", "v1") == []  # nothing written


def test_vm_encrypted_after_protection_fails_until_access_is_granted_then_goes_on(world, core, encrypted):
    folder = _luks_vm(world.home / "vms", encrypted, None)
    register_local_host(core, world.home / "vms")
    core.protection.enable(world.owner, "prod", "v1", "web1")
    assert world.backup()["status"] in ("Completed", "CompletedWithWarnings")
    _define(folder, ENC)  # encrypted later
    register_local_host(core, world.home / "vms")
    failed = world.backup()
    assert failed["status"] == "Failed" and failed["error"]["code"] == "UserErrorKeyVaultPermissionsNotConfigured"
    core.keyvault.set_policy(world.owner, "prod", "kv-disks", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    assert world.backup()["status"] in ("Completed", "CompletedWithWarnings")


def test_keys_lost_restore_refused_then_restored_from_the_point_and_disk_opens(world, core, encrypted, tmp_path):
    folder = _luks_vm(world.home / "vms", encrypted, ENC)
    register_local_host(core, world.home / "vms")
    core.keyvault.set_policy(world.owner, "prod", "kv-disks", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    core.protection.enable(world.owner, "prod", "v1", "web1")
    point = world.backup()["result"]["recovery_point_id"]
    assert core.points.key_backup(world.owner, "prod", "v1", "web1", point)["kek_key"]
    kv = core.keyvault
    for delete, purge, name in ((kv.delete_key, kv.purge_key, "web1-kek"), (kv.delete_secret, kv.purge_secret, "web1-bek")):
        delete(world.owner, "prod", "kv-disks", name)
        purge(world.owner, "prod", "kv-disks", name)
    job = core.points.restore_disks(world.owner, "prod", "v1", "web1", point, str(tmp_path / "r1"))
    refused = world.run(job["id"])
    assert refused["status"] == "Failed" and refused["error"]["code"] == "UserErrorKeysAndSecretsNotFoundForRestore"
    assert "restore-key" in refused["error"]["recommendation"]
    assert not (tmp_path / "r1" / "vda.raw").exists()
    kv.restore_from_recovery_point(world.owner, "prod", "v1", "web1", point, ("keys", "secrets"))
    job = core.points.restore_disks(world.owner, "prod", "v1", "web1", point, str(tmp_path / "r2"))
    assert world.run(job["id"])["status"] == "Completed"
    restored = tmp_path / "r2" / "vda.raw"
    assert restored.read_bytes() == (folder / "vda.raw").read_bytes()
    assert _opens(restored, kv.unwrap_bek(world.owner, "prod", "kv-disks", "web1-bek"), tmp_path)

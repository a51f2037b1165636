"""A LUKS disk made with cryptsetup: its BEK wrapped by a KEK in the key vault, the keys backed up
(as with a recovery point), deleted and purged, restored from the backup, and the disk opens with the
restored key (``cryptsetup luksOpen --test-passphrase --key-file``; no device mapper needed)."""

from __future__ import annotations

import os
import subprocess

import pytest

from haven.keyvault import errors as E
from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE
from tests.services._util import require_binary


def _luks_image(path, key_file) -> None:
    cryptsetup = require_binary("cryptsetup")
    with open(path, "wb") as fh:
        fh.truncate(32 << 20)
    subprocess.run([cryptsetup, "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                    "--key-file", str(key_file), str(path)], check=True, capture_output=True)


def _opens(path, key: bytes, tmp_path) -> bool:
    kf = tmp_path / ("try-" + os.urandom(4).hex())
    kf.write_bytes(key)
    r = subprocess.run(["cryptsetup", "luksOpen", "--test-passphrase", "--key-file", str(kf), str(path)], capture_output=True)
    kf.unlink()
    return r.returncode == 0


@pytest.mark.parametrize("kty", ["RSA", "AES"])
def test_luks_disk_keys_backed_up_deleted_restored_and_disk_opens(kvs, root, tmp_path, kty):
    disk_key = os.urandom(64)
    key_file = tmp_path / "bek.key"
    key_file.write_bytes(disk_key)
    image = tmp_path / "vda.raw"
    _luks_image(image, key_file)
    key_file.unlink()
    assert subprocess.run(["cryptsetup", "isLuks", str(image)]).returncode == 0

    kvs.create(root, "prod", "kv-disks", "local", purge_protection=False)
    kvs.create_key(root, "prod", "kv-disks", "vm1-kek", kty)
    bek = kvs.set_bek(root, "prod", "kv-disks", "vm1-bek", disk_key, kek="vm1-kek")
    assert bek["tags"]["kek"].startswith("kv-disks/keys/vm1-kek/")
    assert kvs.show_secret(root, "prod", "kv-disks", "vm1-bek")["value"] != disk_key.hex()  # the BEK is stored wrapped
    enc = {"method": "luks", "key_vault": "kv-disks", "bek_secret": "vm1-bek", "kek_key": "vm1-kek", "vm": "vm1"}
    kvs.set_policy(root, "prod", "kv-disks", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    backup = kvs.backup_keys(enc, "prod")  # what a recovery point carries

    # the keys are lost: deleted and purged
    kvs.delete_key(root, "prod", "kv-disks", "vm1-kek")
    kvs.delete_secret(root, "prod", "kv-disks", "vm1-bek")
    kvs.purge_key(root, "prod", "kv-disks", "vm1-kek")
    kvs.purge_secret(root, "prod", "kv-disks", "vm1-bek")
    with pytest.raises(E.KeysMissingForRestore):
        kvs.check_restore(enc, "prod")

    # restored from the backup blob, by a user with restore permissions
    out = kvs.restore_keys_from_backup(backup, caller=root, subscription="prod")
    assert [k["name"] for k in out["keys"]] == ["vm1-kek"]
    kvs.check_restore(enc, "prod")
    restored = kvs.unwrap_bek(root, "prod", "kv-disks", "vm1-bek")
    assert restored == disk_key
    assert _opens(image, restored, tmp_path)

    # a wrong KEK fails closed: no key comes out, and a wrong key does not open the disk
    kvs.create_key(root, "prod", "kv-disks", "other-kek", kty)
    wrapped = kvs.show_secret(root, "prod", "kv-disks", "vm1-bek")["value"]
    from haven.keyvault.crypto import b64d
    with pytest.raises(E.UnwrapFailed):
        kvs.unwrap(root, "prod", "kv-disks", "other-kek", b64d(wrapped))
    assert not _opens(image, os.urandom(64), tmp_path)

"""An encrypted VM's files, read from the vault: its LUKS2 disk opened with the BEK its recovery point
keeps (unwrapped by the KEK kept with it), under the rules of restoring those keys; a disk the BEK does
not open and an Operator without key access get typed errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE
from tests.files import images
from tests.files.test_roundtrip import listed, source_entries
from tests.foundation.helpers import register_local_host, run_job
from tests.security.principals import bearer, user_tokens

BASE = "/api/v1/subscriptions/prod/vaults/v1/items/enc1"
ENC = {"method": "luks", "key_vault": "kv-disks", "bek_secret": "enc1-bek", "kek_key": "enc1-kek"}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'haven.db'}"


def encrypted_vm(core, home: Path, api) -> tuple[str, Path, dict]:
    """VM enc1: vda a LUKS2 volume (its BEK) holding ext4, vdb a LUKS2 volume formatted with another key."""
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    core.subscriptions.create(owner, "prod")
    core.subscriptions.create(owner, "dev")
    core.vaults.create(owner, "prod", "v1", "local", None)
    kv = core.keyvault
    kv.create(owner, "prod", "kv-disks", "local", purge_protection=False)
    kv.create_key(owner, "prod", "kv-disks", "enc1-kek", "RSA")
    bek = os.urandom(64)
    kv.set_bek(owner, "prod", "kv-disks", "enc1-bek", bek, kek="enc1-kek")
    kv.set_policy(owner, "prod", "kv-disks", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    tree = images.make_tree(home / "tree", 1)
    folder = home / "vms" / "enc1"
    folder.mkdir(parents=True)
    images.luks2(images.ext4(tree, home / "inner.img", 40 << 20), folder / "vda.raw", bek)
    with open(folder / "vdb.raw", "wb") as fh:
        fh.truncate(20 << 20)
    other_key = home / "other.key"
    other_key.write_bytes(os.urandom(64))
    images.run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
               "--key-file", other_key, folder / "vdb.raw")
    (folder / "vm.json").write_text(json.dumps({"name": "enc1", "encryption": ENC, "disks": [
        {"name": n, "file": f"{n}.raw", "format": "raw"} for n in ("vda", "vdb")]}))
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "enc1")
    job = core.protection.backup_now(owner, "prod", "v1", "enc1")
    run_job(core, job["id"])
    point = core.points.list(owner, "prod", "v1", "enc1")[0]["id"]
    assert core.points.key_backup(owner, "prod", "v1", "enc1", point)["bek_secrets"] == ["enc1-bek"]
    tokens, _ = user_tokens(core, owner)
    return point, tree, tokens


def test_an_encrypted_vms_files_are_read_with_the_bek_its_point_keeps(core, home, api):
    point, tree, tokens = encrypted_vm(core, home, api)
    rp = f"{BASE}/recovery-points/{point}"
    r = api.get(f"{rp}/volumes", params={"disk": "vda"})
    assert r.status_code == 200, r.text
    assert [(v["id"], v["filesystem"], v["encrypted"]) for v in r.json()["volumes"]] == [("disk", "ext4", True)]
    # every file listed and downloaded byte for byte, by the key vault's creator (who may restore its keys)
    want = source_entries(tree)
    got = listed(api, f"{rp}/files", "vda", "disk")
    assert set(got) == set(want)
    for path, st in want.items():
        if got[path]["type"] == "file":
            r = api.get(f"{rp}/files/download", params={"disk": "vda", "path": path})
            assert r.status_code == 200 and r.content == (tree / path[1:]).read_bytes(), path
    r = api.get(f"{BASE}/files/find", params={"name": "app.conf", "disk": "vda"})
    assert r.status_code == 200, r.text
    digest = hashlib.sha256((tree / "etc" / "app.conf").read_bytes()).hexdigest()[:12]
    assert [(m["recovery_point"], m["path"], m["sha256"]) for m in r.json()["matches"]] == [(point, "/etc/app.conf", digest)]

    # an Operator of the vault without key access: refused like restoring the keys would be; its volume list shows the disk locked
    op = bearer(tokens["operator"])
    r = api.get(f"{rp}/files", params={"disk": "vda", "path": "/etc"}, headers=op)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "UserErrorKeyVaultAccessDenied"), r.text
    assert "restore" in r.json()["error"]["message"]
    r = api.get(f"{rp}/volumes", params={"disk": "vda"}, headers=op)
    assert [(v["id"], v["filesystem"], v["encrypted"]) for v in r.json()["volumes"]] == [("disk", "luks", True)]
    r = api.get(f"{BASE}/files/find", params={"name": "app.conf"}, headers=op)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "UserErrorKeyVaultAccessDenied"), r.text
    assert all(d["principal"] != "operator" for d in api.get("/api/v1/subscriptions/prod/vaults/v1/file-downloads").json())  # refusals record nothing
    # ... granted what restoring the keys needs, it reads the files
    owner = core.auth.authenticate(api.headers["Authorization"].split()[1])
    core.keyvault.set_policy(owner, "prod", "kv-disks", "operator", key_permissions=["restore"], secret_permissions=["restore"])
    r = api.get(f"{rp}/files/download", params={"disk": "vda", "path": "/data/large.bin"}, headers=op)
    assert r.status_code == 200 and r.content == (tree / "data" / "large.bin").read_bytes()
    # a Reader never gets that far
    r = api.get(f"{rp}/files", params={"disk": "vda", "path": "/"}, headers=bearer(tokens["reader"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorAuthorizationFailed"
    # a LUKS disk the BEK does not open
    r = api.get(f"{rp}/files", params={"disk": "vdb", "path": "/"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "UserErrorFileVolumeKeyInvalid"), r.text
    assert r.json()["error"]["recommendation"]

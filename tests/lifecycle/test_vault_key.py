"""A vault's data key wrapped by a key-vault KEK: set, rotate (no data rewritten), and fail closed without it."""

import pytest

from haven.db.models import Vault


def _objects(core) -> dict[str, bytes]:
    """Every data object of the vault (chunks and manifests), by name, with its bytes."""
    with core.db.session() as s:
        vault = s.query(Vault).one()
    backend = core.storage.backend(vault.storage_url)
    return {o.name: backend.load(o.name) for o in backend.list("") if not o.name.startswith(("config", "locks", "gc"))}


def test_data_key_moves_into_the_key_vault_and_rotates_without_rewriting_data(world, core, tmp_path):
    world.setup()
    point = world.backup()["result"]["recovery_point_id"]
    original = (world.vm_folder / "vda.raw").read_bytes()
    before = _objects(core)
    core.keyvault.create(world.owner, "prod", "kv-vaults", "local", purge_protection=False)
    core.keyvault.create_key(world.owner, "prod", "kv-vaults", "vault-kek", "RSA")
    vault = core.vaults.set_encryption_key(world.owner, "prod", "v1", "kv-vaults", "vault-kek")
    assert vault["encryption_key"] == "kv-vaults/keys/vault-kek"
    first_version = core.keyvault.show_key(world.owner, "prod", "kv-vaults", "vault-kek")["kid"]
    rotated = core.vaults.rotate_encryption_key(world.owner, "prod", "v1")
    assert rotated["encryption_key"] == "kv-vaults/keys/vault-kek"
    assert core.keyvault.show_key(world.owner, "prod", "kv-vaults", "vault-kek")["kid"] != first_version
    assert _objects(core) == before  # only the wrapped data key changed: no chunk or manifest rewritten
    job = core.points.restore_disks(world.owner, "prod", "v1", "web1", point, str(tmp_path / "r"))
    assert world.run(job["id"])["status"] == "Completed"
    assert (tmp_path / "r" / "vda.raw").read_bytes() == original
    assert world.backup()["status"] in ("Completed", "CompletedWithWarnings")  # new data under the rotated key


def test_without_its_key_vault_key_the_vault_fails_closed(world, core):
    world.setup()
    world.backup()
    core.keyvault.create(world.owner, "prod", "kv-vaults", "local", purge_protection=False)
    core.keyvault.create_key(world.owner, "prod", "kv-vaults", "vault-kek", "AES")
    core.vaults.set_encryption_key(world.owner, "prod", "v1", "kv-vaults", "vault-kek")
    core.keyvault.delete_key(world.owner, "prod", "kv-vaults", "vault-kek")
    core.keyvault.purge_key(world.owner, "prod", "kv-vaults", "vault-kek")
    failed = world.backup()
    assert failed["status"] == "Failed" and failed["error"]["code"]
    with core.db.session() as s:
        vault = s.query(Vault).one()
    with pytest.raises(Exception):  # no data key without the KEK: nothing opens
        core.storage.open(vault)

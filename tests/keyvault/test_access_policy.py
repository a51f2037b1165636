"""The access-policy matrix: every data-plane operation needs exactly its permission; management needs a role."""

from __future__ import annotations

import os

import pytest

from haven.keyvault import errors as E
from haven.keyvault.permissions import BACKUP_PRINCIPAL, KEY_PERMISSIONS, SECRET_PERMISSIONS, TEMPLATES
from haven.services.auth import RoleTooLow
from haven.services.subscriptions import SubscriptionNotFound
from tests.keyvault.conftest import user

# operation -> (kind, permission, call)
OPS = {
    "key create": ("key", "create", lambda k, c: k.create_key(c, "prod", "kv1", "new-" + os.urandom(3).hex(), "AES")),
    "key list": ("key", "list", lambda k, c: k.list_keys(c, "prod", "kv1")),
    "key show": ("key", "get", lambda k, c: k.show_key(c, "prod", "kv1", "kek")),
    "key wrap": ("key", "wrapKey", lambda k, c: k.wrap(c, "prod", "kv1", "kek", b"x" * 32)),
    "key unwrap": ("key", "unwrapKey", lambda k, c: k.unwrap(c, "prod", "kv1", "kek", b"\0" * 40)),
    "key backup": ("key", "backup", lambda k, c: k.backup_key(c, "prod", "kv1", "kek")),
    "key restore": ("key", "restore", lambda k, c: k.restore_key(c, "prod", "kv1", "HKVB1.key.AAAA")),
    "key delete": ("key", "delete", lambda k, c: k.delete_key(c, "prod", "kv1", "nope")),
    "key recover": ("key", "recover", lambda k, c: k.recover_key(c, "prod", "kv1", "nope")),
    "key purge": ("key", "purge", lambda k, c: k.purge_key(c, "prod", "kv1", "nope")),
    "secret set": ("secret", "set", lambda k, c: k.set_secret(c, "prod", "kv1", "s2", "v")),
    "secret list": ("secret", "list", lambda k, c: k.list_secrets(c, "prod", "kv1")),
    "secret show": ("secret", "get", lambda k, c: k.show_secret(c, "prod", "kv1", "s1")),
    "secret backup": ("secret", "backup", lambda k, c: k.backup_secret(c, "prod", "kv1", "s1")),
    "secret restore": ("secret", "restore", lambda k, c: k.restore_secret(c, "prod", "kv1", "HKVB1.secret.AAAA")),
    "secret delete": ("secret", "delete", lambda k, c: k.delete_secret(c, "prod", "kv1", "nope")),
    "secret recover": ("secret", "recover", lambda k, c: k.recover_secret(c, "prod", "kv1", "nope")),
    "secret purge": ("secret", "purge", lambda k, c: k.purge_secret(c, "prod", "kv1", "nope")),
}


@pytest.fixture
def world(kvs, root, core):
    kvs.create(root, "prod", "kv1", "local")
    kvs.create_key(root, "prod", "kv1", "kek", "AES")
    kvs.set_secret(root, "prod", "kv1", "s1", "v")
    alice = user(core, root, "alice", "Reader")
    return kvs, root, alice


def test_every_operation_needs_exactly_its_permission(world):
    kvs, root, alice = world
    assert set(p for k, p, _ in OPS.values() if k == "key") == set(KEY_PERMISSIONS)
    assert set(p for k, p, _ in OPS.values() if k == "secret") == set(SECRET_PERMISSIONS)
    for op, (kind, perm, call) in OPS.items():
        # without it (but with every other permission), denied with the fix naming it
        others_k = [p for p in KEY_PERMISSIONS if not (kind == "key" and p == perm)]
        others_s = [p for p in SECRET_PERMISSIONS if not (kind == "secret" and p == perm)]
        kvs.set_policy(root, "prod", "kv1", "alice", key_permissions=others_k, secret_permissions=others_s)
        with pytest.raises(E.AccessDenied) as exc:
            call(kvs, alice)
        assert exc.value.code == "UserErrorKeyVaultAccessDenied" and repr(perm) in exc.value.text, op
        assert f"--{kind}-permissions {perm}" in exc.value.fix
        # with only it, allowed (the operation may still fail on its input, never on access)
        kvs.set_policy(root, "prod", "kv1", "alice", key_permissions=[perm] if kind == "key" else [],
                       secret_permissions=[perm] if kind == "secret" else [])
        try:
            call(kvs, alice)
        except E.AccessDenied:
            pytest.fail(f"{op} denied with {kind}:{perm}")
        except (E.KeyNotFound, E.SecretNotFound, E.UnwrapFailed, E.BackupBlobInvalid):
            pass


def test_roles_gate_management_and_visibility(world, core):
    kvs, root, alice = world
    contributor = user(core, root, "carol", "Contributor")
    operator = user(core, root, "oscar", "Operator")
    core.subscriptions.create(root, "dev")
    stranger = user(core, root, "sam", "Owner", "dev")
    # Readers read the management plane; only Contributors change it
    assert kvs.show(alice, "prod", "kv1")["name"] == "kv1"
    for who in (alice, operator):
        with pytest.raises(RoleTooLow):
            kvs.create(who, "prod", "kv-x", "local")
        with pytest.raises(RoleTooLow):
            kvs.set_policy(who, "prod", "kv1", who.name, template="All")
        with pytest.raises(RoleTooLow):
            kvs.delete(who, "prod", "kv1")
    # a subscription role alone gives no data-plane access: the access policy does
    with pytest.raises(E.AccessDenied):
        kvs.list_keys(contributor, "prod", "kv1")
    kvs.set_policy(contributor, "prod", "kv1", "carol", template="Key Management")
    assert [k["name"] for k in kvs.list_keys(contributor, "prod", "kv1")] == ["kek"]
    with pytest.raises(E.AccessDenied):
        kvs.list_secrets(contributor, "prod", "kv1")
    # another subscription's principal does not even see the key vault
    with pytest.raises(SubscriptionNotFound):
        kvs.list_keys(stranger, "prod", "kv1")
    # policies: templates, validation, removal
    with pytest.raises(E.TemplateInvalid):
        kvs.set_policy(root, "prod", "kv1", "alice", template="Azure Backup")
    with pytest.raises(E.PermissionInvalid):
        kvs.set_policy(root, "prod", "kv1", "alice", key_permissions=["get", "fly"])
    with pytest.raises(E.PrincipalNotFound):
        kvs.set_policy(root, "prod", "kv1", "nobody", template="All")
    kvs.set_policy(root, "prod", "kv1", BACKUP_PRINCIPAL, template="Haven Backup")
    shown = {p["principal"]: p for p in kvs.show(root, "prod", "kv1")["access_policies"]}
    assert shown[BACKUP_PRINCIPAL]["principal_kind"] == "service"
    assert shown[BACKUP_PRINCIPAL]["key_permissions"] == list(TEMPLATES["Haven Backup"]["keys"])
    kvs.delete_policy(root, "prod", "kv1", "carol")
    with pytest.raises(E.AccessDenied):
        kvs.list_keys(contributor, "prod", "kv1")
    with pytest.raises(E.PolicyNotFound):
        kvs.delete_policy(root, "prod", "kv1", "carol")

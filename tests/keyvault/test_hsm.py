"""KEKs in a PKCS#11 token (SoftHSM): generated non-extractable, wrap/unwrap, wrong key fails closed,
a BEK wrapped by an HSM KEK survives backup, delete and restore."""

from __future__ import annotations

import os

import pytest

from haven.keyvault import errors as E
from haven.keyvault.crypto import b64d
from haven.keyvault.hsm import Pkcs11Backend
from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE
from tests.services.softhsm import SoftHsm


@pytest.fixture(scope="session")
def softhsm():
    hsm = SoftHsm().start()
    yield hsm
    hsm.stop()


@pytest.fixture
def hsm_kvs(kvs, softhsm):
    kvs.hsm = Pkcs11Backend(softhsm.module, softhsm.label, softhsm.pin)
    return kvs


def test_hsm_kek_wraps_and_never_leaves(hsm_kvs, root, softhsm):
    kvs = hsm_kvs
    kvs.create(root, "prod", "kv-hsm", "local")
    key = kvs.create_key(root, "prod", "kv-hsm", "hsm-kek", "AES", 256, hsm=True)
    assert key["kty"] == "AES-HSM" and key["protection"] == "hsm"
    with pytest.raises(E.KeyTypeInvalid):
        kvs.create_key(root, "prod", "kv-hsm", "hsm-rsa", "RSA", 3072, hsm=True)
    data = os.urandom(64)
    w = kvs.wrap(root, "prod", "kv-hsm", "hsm-kek", data)
    assert b64d(kvs.unwrap(root, "prod", "kv-hsm", "hsm-kek", b64d(w["value"]))["value"]) == data
    # the key in the token is sensitive and not extractable
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    label = f"haven-kv-{_row_id(kvs, 'hsm-kek')}"
    with pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label).open(user_pin=softhsm.pin) as s:
        k = s.get_key(label=label, object_class=ObjectClass.SECRET_KEY)
        assert k[Attribute.EXTRACTABLE] is False and k[Attribute.SENSITIVE] is True
        with pytest.raises(pkcs11.PKCS11Error):
            k[Attribute.VALUE]
    # a wrong KEK (another HSM key) fails closed
    kvs.create_key(root, "prod", "kv-hsm", "hsm-kek2", "AES", hsm=True)
    with pytest.raises(E.UnwrapFailed):
        kvs.unwrap(root, "prod", "kv-hsm", "hsm-kek2", b64d(w["value"]))
    # a BEK wrapped by the HSM KEK: backed up, deleted, restored, unwrapped again
    kvs.set_bek(root, "prod", "kv-hsm", "bek", data, kek="hsm-kek")
    kvs.set_policy(root, "prod", "kv-hsm", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    enc = {"key_vault": "kv-hsm", "bek_secret": "bek", "kek_key": "hsm-kek"}
    backup = kvs.backup_keys(enc, "prod")
    kvs.delete_key(root, "prod", "kv-hsm", "hsm-kek")
    kvs.delete_secret(root, "prod", "kv-hsm", "bek")
    kvs.restore_keys_from_backup(backup)
    assert kvs.unwrap_bek(None, "prod", "kv-hsm", "bek") == data
    # the engine's KeyWrapper protocol, over an HSM key
    wrapper = kvs.key_wrapper("prod", "kv-hsm", "hsm-kek")
    assert wrapper.unwrap(wrapper.wrap(b"d" * 32)) == b"d" * 32
    # purging an HSM key destroys its token object
    label2 = f"haven-kv-{_row_id(kvs, 'hsm-kek2')}"
    assert kvs.hsm.exists(label2)
    kvs.delete_key(root, "prod", "kv-hsm", "hsm-kek2")
    kvs.purge_key(root, "prod", "kv-hsm", "hsm-kek2")
    assert not kvs.hsm.exists(label2)


def _row_id(kvs, name):
    from sqlalchemy import select

    from haven.keyvault.tables import KvKey

    with kvs.core.db.session() as s:
        return s.scalar(select(KvKey.id).where(KvKey.name == name))

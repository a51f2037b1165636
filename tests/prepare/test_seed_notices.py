"""Seed notices ``prepare`` shows: the proxy server's inbound rule (seed 001, proxy step 2) and, for an encrypted
VM, the state of its key vault (seed 003: it exists, is not soft-deleted, the backup service may read its keys)."""

from __future__ import annotations

from haven.services.prepare import PrepareService, nftables_rules
from tests.foundation.helpers import register_local_host

DOC = {"region": "local", "ip_ranges": ["203.0.113.0/24"]}


def test_proxy_rules_open_the_proxy_port_on_the_proxy_server():
    text = nftables_rules(DOC, "proxy", proxy_host="10.0.0.5", proxy_port=3128)
    inbound = text[text.index("# 2. On the proxy server"):text.index("# 3.")]
    assert "hook input" in inbound and 'tcp dport 3128 accept comment "allow-proxy-inbound"' in inbound
    assert "saddr" not in inbound and "sport" not in inbound  # any remote address and port, as the seed's rule


def _encrypted_vm(home, name="enc1"):
    import json

    folder = home / "vms" / name
    folder.mkdir(parents=True)
    (folder / "vda.raw").write_bytes(b"\0" * (1 << 20))
    (folder / "vm.json").write_text(json.dumps({"name": name, "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}],
                                                "encryption": {"method": "luks", "key_vault": "kv1", "bek_secret": "enc1-bek",
                                                               "kek_key": "enc1-kek"}}))


def _kv_check(core, owner) -> dict:
    result = PrepareService(core).check(owner, "prod", "enc1")  # probes the folder VM: its definition names the keys
    return next(c for c in result["checks"] if c["check"] == "key-vault")


def test_encrypted_vm_key_vault_state(core, owner_token, home):
    owner = core.auth.authenticate(owner_token)
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-local", "local")
    _encrypted_vm(home)
    register_local_host(core, home / "vms")
    c = _kv_check(core, owner)
    assert c["status"] == "fail" and c["code"] == "UserErrorKeyVaultNotFound" and c["details"]["state"] == "missing", c

    core.keyvault.create(owner, "prod", "kv1", "local")
    core.keyvault.create_key(owner, "prod", "kv1", "enc1-kek")
    core.keyvault.set_bek(owner, "prod", "kv1", "enc1-bek", b"k" * 32, "enc1-kek")
    c = _kv_check(core, owner)
    assert c["status"] == "fail" and c["code"] == "UserErrorKeyVaultPermissionsNotConfigured", c  # no access yet

    core.keyvault.set_policy(owner, "prod", "kv1", "Backup Management Service", template="Haven Backup")
    c = _kv_check(core, owner)
    assert c["status"] == "pass" and c["details"]["state"] == "exists", c

    core.keyvault.delete(owner, "prod", "kv1")
    c = _kv_check(core, owner)
    assert c["status"] == "fail" and c["code"] == "UserErrorKeyVaultSoftDeleted" and c["details"]["state"] == "soft-deleted"
    assert c["fix"] == "Recover it: haven keyvault recover -s prod --name kv1"

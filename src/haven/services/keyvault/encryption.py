"""A VM's encryption settings, as its ``vm.json`` or libvirt metadata names them (pure parsing)."""

from __future__ import annotations

from haven.keyvault import errors as E

__all__ = ["parse_encryption"]


def _ref(text: str, kind: str, default_vault: str | None) -> tuple[str | None, str, str | None]:
    """``name``, ``name/version``, ``vault/keys|secrets/name[/version]`` -> (vault, name, version)."""
    parts = [p for p in str(text).split("/") if p]
    if len(parts) >= 3 and parts[1] in ("keys", "secrets"):
        return parts[0], parts[2], parts[3] if len(parts) > 3 else None
    if len(parts) == 2:
        return default_vault, parts[0], parts[1]
    if len(parts) == 1:
        return default_vault, parts[0], None
    raise E.EncryptionSettingsInvalid(reason=f"{kind} reference {text!r} is malformed")


def parse_encryption(enc: dict | None) -> dict | None:
    """A VM's encryption settings (``vm.json`` ``"encryption"`` or libvirt metadata), normalised.

    ``{"method": "luks", "key_vault": "kv1", "bek_secret": "vm1-bek", "kek_key": "vm1-kek"}``; references may
    also be ``kv1/secrets/vm1-bek[/version]``; per-disk BEKs as ``"disks": {"vdb": {"bek_secret": …}}``;
    an optional ``"subscription"``. ``None`` (or no BEK named) means not encrypted by the key vault.
    """
    if not enc:
        return None
    if not isinstance(enc, dict):
        raise E.EncryptionSettingsInvalid(reason="expected an object")
    vault = enc.get("key_vault") or enc.get("keyvault") or enc.get("key_vault_name")
    bek_refs = [enc["bek_secret"]] if enc.get("bek_secret") else []
    for disk in (enc.get("disks") or {}).values():
        if isinstance(disk, dict) and disk.get("bek_secret"):
            bek_refs.append(disk["bek_secret"])
    if not bek_refs:
        if enc.get("kek_key"):
            raise E.EncryptionSettingsInvalid(reason="a KEK is named but no BEK secret")
        return None
    beks = []
    for ref in bek_refs:
        v, n, ver = _ref(ref, "secret", vault)
        vault = vault or v
        if v != vault:
            raise E.EncryptionSettingsInvalid(reason="the BEK and KEK must be in the VM's one key vault")
        if (n, ver) not in beks:
            beks.append((n, ver))
    kek = None
    if enc.get("kek_key"):
        v, n, ver = _ref(enc["kek_key"], "key", vault)
        if v != vault:
            raise E.EncryptionSettingsInvalid(reason="the BEK and KEK must be in the VM's one key vault")
        kek = (n, ver)
    if not vault:
        raise E.EncryptionSettingsInvalid(reason="no key vault is named")
    return {"key_vault": vault, "subscription": enc.get("subscription"), "beks": beks, "kek": kek,
            "vm": f" {enc['vm']!r}" if enc.get("vm") else "", "raw": {k: v for k, v in enc.items() if isinstance(v, (str, int, bool, dict, list))}}

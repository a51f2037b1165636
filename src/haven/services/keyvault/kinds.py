"""What differs between a key and a secret: their table, their not-found error, what a version shows,
and what a version carries in a single-object backup. Everything else about these versioned objects
(versions, soft delete, recover, purge, backup, restore) is one core, :mod:`.objects`.

A kind's methods get the service (``svc``) for the sealer, the HSM and the session's lookups.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from haven.db.types import new_id
from haven.errors import NotFound
from haven.keyvault import errors as E
from haven.keyvault.crypto import b64d, b64e
from haven.keyvault.tables import KeyVault, KvKey, KvSecret

__all__ = ["ObjectKind", "KEY", "SECRET", "KINDS", "binding", "kid"]


def binding(kind: str, vault_id: str, name: str, version: str) -> tuple[str, ...]:
    """What a sealed value is bound to: the kind, vault, name and version of its row."""
    return (kind, vault_id, name, version)


def kid(kv: KeyVault, row: KvKey) -> str:
    return f"{kv.name}/keys/{row.name}/{row.version}"


class ObjectKind:
    name: str
    plural: str
    model: type[KvKey] | type[KvSecret]
    not_found: type[NotFound]

    def view(self, kv: KeyVault, row) -> dict:
        """The object as listings, deletes and restores answer it."""
        raise NotImplementedError

    def shown(self, svc: Any, s, kv: KeyVault, row) -> dict:
        """The object as ``show`` answers it."""
        raise NotImplementedError

    def version_doc(self, svc: Any, kv: KeyVault, row) -> dict:
        """The kind's own fields of one version, in a backup (sealed as a whole by the caller)."""
        raise NotImplementedError

    def version_columns(self, svc: Any, kv: KeyVault, name: str, v: dict) -> dict:
        """The kind's own columns of a version restored from a backup."""
        raise NotImplementedError

    def before_purge(self, svc: Any, s, rows: list) -> None:
        """Called with the versions about to be purged for good."""

    def row(self, kv: KeyVault, name: str, version: str, object_id: str, tags: dict | None, created_at: datetime, **columns):
        return self.model(id=new_id(), vault_id=kv.id, name=name, version=version, object_id=object_id, tags=dict(tags or {}),
                          created_at=created_at, **columns)

    def seal(self, svc: Any, kv: KeyVault, name: str, version: str, clear: bytes) -> bytes:
        return svc.sealer.seal(clear, *binding(self.name, kv.id, name, version))

    def open(self, svc: Any, kv: KeyVault, row, sealed: bytes) -> bytes:
        return svc.sealer.open(sealed, *binding(self.name, kv.id, row.name, row.version))


class _Key(ObjectKind):
    name, plural, model, not_found = "key", "keys", KvKey, E.KeyNotFound

    def view(self, kv: KeyVault, row: KvKey) -> dict:
        out = {"kid": kid(kv, row), "name": row.name, "version": row.version, "kty": row.kty + ("-HSM" if row.protection == "hsm" else ""),
               "size": row.size, "protection": row.protection, "enabled": row.enabled, "key_ops": ["wrapKey", "unwrapKey"],
               "tags": row.tags or {}, "created_at": row.created_at, "deleted_at": row.deleted_at, "scheduled_purge_at": row.purge_at}
        if row.public:
            out["public_key_pem"] = row.public
        return out

    def shown(self, svc: Any, s, kv: KeyVault, row: KvKey) -> dict:
        out = self.view(kv, row)
        out["versions"] = [r.version for r in svc._versions(s, self, kv, row.name)]
        return out

    def version_doc(self, svc: Any, kv: KeyVault, row: KvKey) -> dict:
        v = {"kty": row.kty, "size": row.size, "protection": row.protection, "public": row.public, "hsm_ref": row.hsm_ref,
             "enabled": row.enabled}
        if row.material is not None:
            v["material"] = b64e(self.open(svc, kv, row, row.material))
        return v

    def version_columns(self, svc: Any, kv: KeyVault, name: str, v: dict) -> dict:
        if v["protection"] == "hsm" and (svc.hsm is None or not svc.hsm.exists(v["hsm_ref"]["label"])):
            raise E.HsmError(token=(v.get("hsm_ref") or {}).get("token", "?"), reason=f"HSM key {v['hsm_ref']['label']!r} of {name!r} is not in the configured token")
        columns = {"kty": v["kty"], "size": v["size"], "protection": v["protection"], "public": v.get("public"), "hsm_ref": v.get("hsm_ref"),
                   "enabled": v.get("enabled", True)}
        if v.get("material"):
            columns["material"] = self.seal(svc, kv, name, v["version"], b64d(v["material"]))
        return columns

    def before_purge(self, svc: Any, s, rows: list) -> None:
        svc._destroy_hsm_keys(s, rows)


class _Secret(ObjectKind):
    name, plural, model, not_found = "secret", "secrets", KvSecret, E.SecretNotFound

    def view(self, kv: KeyVault, row: KvSecret) -> dict:
        return {"id": f"{kv.name}/secrets/{row.name}/{row.version}", "name": row.name, "version": row.version,
                "content_type": row.content_type, "tags": row.tags or {}, "created_at": row.created_at,
                "deleted_at": row.deleted_at, "scheduled_purge_at": row.purge_at}

    def shown(self, svc: Any, s, kv: KeyVault, row: KvSecret) -> dict:
        out = self.view(kv, row)
        out["value"] = self.open(svc, kv, row, row.value).decode()
        return out

    def version_doc(self, svc: Any, kv: KeyVault, row: KvSecret) -> dict:
        return {"content_type": row.content_type, "value": b64e(self.open(svc, kv, row, row.value))}

    def version_columns(self, svc: Any, kv: KeyVault, name: str, v: dict) -> dict:
        return {"content_type": v.get("content_type"), "value": self.seal(svc, kv, name, v["version"], b64d(v["value"]))}


KEY: ObjectKind = _Key()
SECRET: ObjectKind = _Secret()
KINDS: dict[str, ObjectKind] = {k.name: k for k in (KEY, SECRET)}

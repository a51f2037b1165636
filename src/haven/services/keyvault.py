"""Key vaults: management (subscription roles) and data plane (access policies), and the service
API the backup path uses for encrypted VMs (seed 003).

Management — create, list, show, delete (soft), recover, purge a key vault, set and delete access
policies — needs a subscription role: Reader to read, Contributor to change.

Data plane — keys and secrets — needs Reader on the subscription (to see the vault at all) *and*
an access policy for the caller's principal granting the permission (``keys: get, list, create,
delete, recover, backup, restore, purge, wrapKey, unwrapKey``; ``secrets: get, list, set, delete,
recover, backup, restore, purge``). The creator of a key vault gets every permission.

The backup path (no caller: the server acts as the built-in principal ``Backup Management
Service``) uses :meth:`KeyVaultService.check_backup_access`, :meth:`backup_keys`,
:meth:`check_restore`, :meth:`check_restore_vm` and :meth:`restore_keys_from_backup`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import select

from haven.db.models import Principal, Subscription
from haven.db.types import new_id
from haven.domain.enums import PrincipalKind, Role
from haven.keyvault import errors as E
from haven.keyvault.crypto import AES_ALGS, MAX_WRAP, RSA_ALGS, Sealer, SoftwareKey, WrapError, b64d, b64e
from haven.keyvault.permissions import BACKUP_NEEDS, BACKUP_PRINCIPAL, KEY_PERMISSIONS, SECRET_PERMISSIONS, TEMPLATES
from haven.keyvault.tables import KeyVault, KvAccessPolicy, KvKey, KvSecret
from haven.services.auth import Caller

__all__ = ["KeyVaultService", "keyvault_service", "KeyVaultKeyWrapper"]

_KV_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_OBJ_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")
_SIZES = {"RSA": (3072, 4096), "AES": (256,)}
VM_KEYS_FORMAT = "haven-vm-keys/1"


def keyvault_service(core) -> "KeyVaultService":
    """The core's key vault service (``core.keyvault`` once the core wires it; made on first use until then)."""
    svc = getattr(core, "keyvault", None)
    if svc is None:
        svc = KeyVaultService(core)
        core.keyvault = svc
    return svc


class KeyVaultService:
    def __init__(self, core):
        self.core = core
        self._sealer: Sealer | None = None
        self._hsm = None
        self._hsm_loaded = False
        #: ``(caller, subscription, vault, vm, point) -> backup dict``; the protection service sets it
        #: so that ``restore-key/restore-secret --recovery-point`` find the recovery point's key backup.
        self.recovery_point_key_backup: Callable[..., dict] | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            from haven.services.storage import load_or_create_master_key

            self._sealer = Sealer(load_or_create_master_key(self.core.settings.master_key_path))
        return self._sealer

    @property
    def hsm(self):
        if not self._hsm_loaded:
            from haven.keyvault.hsm import from_environment

            self._hsm, self._hsm_loaded = from_environment(), True
        return self._hsm

    @hsm.setter
    def hsm(self, backend) -> None:
        self._hsm, self._hsm_loaded = backend, True

    def _now(self):
        return self.core.clock.now()

    def _purge_due(self, s) -> None:
        """Soft-deleted objects past their retention are purged for good."""
        now = self._now()
        for kv in s.scalars(select(KeyVault).where(KeyVault.purge_at.is_not(None), KeyVault.purge_at <= now)):
            self._destroy_hsm_keys(s, s.scalars(select(KvKey).where(KvKey.vault_id == kv.id)).all())
            s.delete(kv)
        for model in (KvKey, KvSecret):
            rows = s.scalars(select(model).where(model.purge_at.is_not(None), model.purge_at <= now)).all()
            if model is KvKey:
                self._destroy_hsm_keys(s, rows)
            for row in rows:
                s.delete(row)
        s.flush()

    def _destroy_hsm_keys(self, s, rows) -> None:
        """Destroy the token objects of purged HSM keys, unless a restored copy elsewhere still uses one."""
        purged = {r.id for r in rows}
        for row in rows:
            if row.protection != "hsm" or not row.hsm_ref or self.hsm is None:
                continue
            label = row.hsm_ref["label"]
            users = [k for k in s.scalars(select(KvKey).where(KvKey.protection == "hsm")) if (k.hsm_ref or {}).get("label") == label]
            if any(k.id not in purged for k in users):
                continue
            try:
                self.hsm.destroy(label)
            except Exception:  # noqa: BLE001 - the purge goes on; the token keeps an orphan object
                pass

    def _sub(self, s, caller: Caller, subscription: str, needed: Role) -> Subscription:
        return self.core.subscriptions.get_visible(s, caller, subscription, needed)

    def _vault(self, s, sub: Subscription, name: str, deleted: bool = False) -> KeyVault:
        q = select(KeyVault).where(KeyVault.subscription_id == sub.id, KeyVault.name == name)
        kv = s.scalar(q)
        if kv is None or (kv.deleted_at is not None) != deleted:
            if deleted:
                raise E.KeyVaultDeletedNotFound(name=name, subscription=sub.name)
            raise E.KeyVaultNotFound(name=name, subscription=sub.name)
        return kv

    @staticmethod
    def _perms(s, kv: KeyVault, principal_id: str) -> tuple[set[str], set[str]]:
        p = s.scalar(select(KvAccessPolicy).where(KvAccessPolicy.vault_id == kv.id, KvAccessPolicy.principal_id == principal_id))
        return (set(p.key_permissions), set(p.secret_permissions)) if p else (set(), set())

    def _data(self, s, caller: Caller, subscription: str, name: str, kind: str, permission: str) -> KeyVault:
        """The data plane's gate: Reader on the subscription, then the caller's access policy."""
        self._purge_due(s)
        sub = self._sub(s, caller, subscription, Role.READER)
        kv = self._vault(s, sub, name)
        keys, secrets = self._perms(s, kv, caller.principal_id)
        if permission not in (keys if kind == "key" else secrets):
            raise E.AccessDenied(principal=caller.name, vault=kv.name, kind=kind, permission=permission)
        return kv

    def _backup_principal(self, s) -> Principal:
        p = s.scalar(select(Principal).where(Principal.name == BACKUP_PRINCIPAL))
        if p is None:
            p = Principal(name=BACKUP_PRINCIPAL, kind=PrincipalKind.SERVICE.value, created_at=self._now())
            s.add(p)
            s.flush()
        return p

    # ------------------------------------------------------------------ management plane
    def create(self, caller: Caller, subscription: str, name: str, region: str, retention_days: int = 90,
               purge_protection: bool = False) -> dict:
        if not isinstance(name, str) or not _KV_NAME.fullmatch(name):
            raise E.KeyVaultNameInvalid(name=name)
        if not 7 <= int(retention_days) <= 90:
            raise E.RetentionInvalid(days=retention_days)
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            self.core.regions.require(region)
            existing = s.scalar(select(KeyVault).where(KeyVault.subscription_id == sub.id, KeyVault.name == name))
            if existing is not None:
                raise E.KeyVaultExists(name=name, state=" (soft-deleted, until " + existing.purge_at.isoformat() + ")" if existing.deleted_at else "")
            kv = KeyVault(subscription_id=sub.id, name=name, region=region, retention_days=int(retention_days),
                          purge_protection=bool(purge_protection), created_at=self._now())
            s.add(kv)
            s.flush()
            s.add(KvAccessPolicy(vault_id=kv.id, principal_id=caller.principal_id, key_permissions=list(KEY_PERMISSIONS),
                                 secret_permissions=list(SECRET_PERMISSIONS)))
            s.flush()
            return self._view_vault(s, kv, sub)

    def list(self, caller: Caller, subscription: str, deleted: bool = False) -> list[dict]:
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.READER)
            rows = s.scalars(select(KeyVault).where(KeyVault.subscription_id == sub.id).order_by(KeyVault.name)).all()
            return [self._view_vault(s, kv, sub, policies=False) for kv in rows if (kv.deleted_at is not None) == deleted]

    def show(self, caller: Caller, subscription: str, name: str) -> dict:
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.READER)
            return self._view_vault(s, self._vault(s, sub, name), sub)

    def update(self, caller: Caller, subscription: str, name: str, purge_protection: bool | None = None) -> dict:
        with self.core.db.session() as s:
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name)
            if purge_protection is not None:
                if kv.purge_protection and not purge_protection:
                    raise E.PurgeProtectionIrreversible(vault=name)
                kv.purge_protection = bool(purge_protection)
            return self._view_vault(s, kv, sub)

    def delete(self, caller: Caller, subscription: str, name: str) -> dict:
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name)
            kv.deleted_at = self._now()
            kv.purge_at = kv.deleted_at + timedelta(days=kv.retention_days)
            return self._view_vault(s, kv, sub, policies=False)

    def recover(self, caller: Caller, subscription: str, name: str) -> dict:
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name, deleted=True)
            kv.deleted_at = kv.purge_at = None
            return self._view_vault(s, kv, sub)

    def purge(self, caller: Caller, subscription: str, name: str) -> None:
        with self.core.db.session() as s:
            self._purge_due(s)
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name, deleted=True)
            if kv.purge_protection:
                raise E.PurgeProtected(vault=name, what="the key vault", purge_at=kv.purge_at.isoformat())
            self._destroy_hsm_keys(s, s.scalars(select(KvKey).where(KvKey.vault_id == kv.id)).all())
            s.delete(kv)

    def set_policy(self, caller: Caller, subscription: str, name: str, principal: str, template: str | None = None,
                   key_permissions: Iterable[str] | None = None, secret_permissions: Iterable[str] | None = None) -> dict:
        """Grant a principal permissions: a template, explicit lists, or both (the lists then replace the template's)."""
        keys: list[str] = []
        secrets: list[str] = []
        if template is not None:
            t = next((v for k, v in TEMPLATES.items() if k.lower() == str(template).lower()), None)
            if t is None:
                raise E.TemplateInvalid(name=template, known=", ".join(TEMPLATES))
            keys, secrets = list(t["keys"]), list(t["secrets"])
        if key_permissions is not None:
            keys = _check_perms("key", key_permissions, KEY_PERMISSIONS)
        if secret_permissions is not None:
            secrets = _check_perms("secret", secret_permissions, SECRET_PERMISSIONS)
        if template is None and key_permissions is None and secret_permissions is None:
            raise E.UserError("Give a template or permissions to grant.", "Pass --template \"Haven Backup\", or --key-permissions / --secret-permissions.")
        with self.core.db.session() as s:
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name)
            p = self._principal(s, principal)
            row = s.scalar(select(KvAccessPolicy).where(KvAccessPolicy.vault_id == kv.id, KvAccessPolicy.principal_id == p.id))
            if row is None:
                row = KvAccessPolicy(vault_id=kv.id, principal_id=p.id)
                s.add(row)
            row.key_permissions, row.secret_permissions = keys, secrets
            s.flush()
            return {"principal": p.name, "key_permissions": keys, "secret_permissions": secrets}

    def delete_policy(self, caller: Caller, subscription: str, name: str, principal: str) -> None:
        with self.core.db.session() as s:
            sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
            kv = self._vault(s, sub, name)
            p = self._principal(s, principal)
            row = s.scalar(select(KvAccessPolicy).where(KvAccessPolicy.vault_id == kv.id, KvAccessPolicy.principal_id == p.id))
            if row is None:
                raise E.PolicyNotFound(vault=name, principal=principal)
            s.delete(row)

    def _principal(self, s, name: str) -> Principal:
        if name == BACKUP_PRINCIPAL:
            return self._backup_principal(s)
        p = s.scalar(select(Principal).where(Principal.name == name))
        if p is None:
            p = s.get(Principal, name)
        if p is None:
            raise E.PrincipalNotFound(name=name)
        return p

    def _view_vault(self, s, kv: KeyVault, sub: Subscription, policies: bool = True) -> dict:
        out = {"id": kv.id, "name": kv.name, "subscription": sub.name, "region": kv.region,
               "soft_delete_retention_days": kv.retention_days, "purge_protection": kv.purge_protection,
               "created_at": kv.created_at, "deleted_at": kv.deleted_at, "scheduled_purge_at": kv.purge_at}
        if policies:
            rows = s.execute(select(KvAccessPolicy, Principal).join(Principal, KvAccessPolicy.principal_id == Principal.id)
                             .where(KvAccessPolicy.vault_id == kv.id).order_by(Principal.name)).all()
            out["access_policies"] = [{"principal": p.name, "principal_kind": p.kind, "key_permissions": list(a.key_permissions),
                                       "secret_permissions": list(a.secret_permissions)} for a, p in rows]
        return out

    # ------------------------------------------------------------------ keys
    def create_key(self, caller: Caller, subscription: str, vault: str, name: str, kty: str = "RSA", size: int | None = None,
                   hsm: bool = False, tags: dict | None = None) -> dict:
        _check_name("key", name)
        kty = str(kty).upper().replace("OCT", "AES").removesuffix("-HSM")
        if kty not in _SIZES:
            raise E.KeyTypeInvalid(what="type", value=kty)
        size = int(size or _SIZES[kty][0])
        if size not in _SIZES[kty] or (hsm and kty != "AES"):
            raise E.KeyTypeInvalid(what="size" if size not in _SIZES[kty] else "type for an HSM", value=f"{kty}-{size}")
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "create")
            object_id = self._object_id_for_new_version(s, KvKey, kv, name, "key")
            row = KvKey(id=new_id(), vault_id=kv.id, name=name, version=_new_version(), object_id=object_id, kty=kty, size=size,
                        protection="hsm" if hsm else "software", tags=dict(tags or {}), enabled=True, created_at=self._now())
            if hsm:
                if self.hsm is None:
                    raise E.HsmNotConfigured(what="created")
                row.hsm_ref = self.hsm.generate(f"haven-kv-{row.id}")
            else:
                material, row.public = SoftwareKey.generate(kty, size)
                row.material = self.sealer.seal(material, *_key_binding(kv.id, name, row.version))
            s.add(row)
            s.flush()
            return self._view_key(kv, row)

    def _object_id_for_new_version(self, s, model, kv, name, kind) -> str:
        rows = s.scalars(select(model).where(model.vault_id == kv.id, model.name == name)).all()
        if rows and all(r.deleted_at is not None for r in rows):
            raise E.ObjectDeletedConflict(kind=kind, name=name, vault=kv.name)
        return rows[0].object_id if rows else new_id()

    def _versions(self, s, model, kv: KeyVault, name: str, deleted: bool = False) -> list:
        rows = s.scalars(select(model).where(model.vault_id == kv.id, model.name == name).order_by(model.version)).all()
        return [r for r in rows if (r.deleted_at is not None) == deleted]

    def _key_row(self, s, kv, name, version=None) -> KvKey:
        rows = self._versions(s, KvKey, kv, name)
        if version:
            rows = [r for r in rows if r.version == version]
        if not rows:
            raise E.KeyNotFound(name=name if not version else f"{name}/{version}", vault=kv.name)
        return rows[-1]

    def list_keys(self, caller: Caller, subscription: str, vault: str, deleted: bool = False) -> list[dict]:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "list")
            latest: dict[str, KvKey] = {}
            for r in s.scalars(select(KvKey).where(KvKey.vault_id == kv.id).order_by(KvKey.version)):
                if (r.deleted_at is not None) == deleted:
                    latest[r.name] = r
            return [self._view_key(kv, r) for _, r in sorted(latest.items())]

    def show_key(self, caller: Caller, subscription: str, vault: str, name: str, version: str | None = None) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "get")
            row = self._key_row(s, kv, name, version)
            out = self._view_key(kv, row)
            out["versions"] = [r.version for r in self._versions(s, KvKey, kv, name)]
            return out

    def delete_key(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._soft_delete(caller, subscription, vault, name, KvKey, "key")

    def recover_key(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._recover(caller, subscription, vault, name, KvKey, "key")

    def purge_key(self, caller: Caller, subscription: str, vault: str, name: str) -> None:
        self._purge(caller, subscription, vault, name, KvKey, "key")

    def backup_key(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "backup")
            rows = self._versions(s, KvKey, kv, name)
            if not rows:
                raise E.KeyNotFound(name=name, vault=vault)
            return {"name": name, "value": self.sealer.seal_blob("key", self._key_doc(kv, rows))}

    def restore_key(self, caller: Caller, subscription: str, vault: str, blob: str) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "restore")  # access first, then the blob
            try:
                _, doc = self.sealer.open_blob(blob, ("key",))
            except WrapError as exc:
                raise E.BackupBlobInvalid(reason=str(exc)) from None
            return self._restore_key_doc(s, kv, doc)

    def wrap(self, caller: Caller | None, subscription: str, vault: str, name: str, value: bytes, alg: str | None = None,
             version: str | None = None) -> dict:
        if not 1 <= len(value) <= MAX_WRAP:
            raise E.WrapInputInvalid(limit=MAX_WRAP, size=len(value))
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "wrapKey") if caller else self._system_vault(s, subscription, vault)
            row = self._key_row(s, kv, name, version)
            alg = _alg(row, alg)
            try:
                wrapped = self._key_impl(kv, row, "wrap", value, alg)
            except WrapError as exc:
                raise E.WrapInputInvalid(limit=MAX_WRAP, size=len(value)) from exc
            return {"kid": _kid(kv, row), "alg": alg, "value": b64e(wrapped)}

    def unwrap(self, caller: Caller | None, subscription: str, vault: str, name: str, value: bytes, alg: str | None = None,
               version: str | None = None) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "unwrapKey") if caller else self._system_vault(s, subscription, vault)
            row = self._key_row(s, kv, name, version)
            alg = _alg(row, alg)
            try:
                plain = self._key_impl(kv, row, "unwrap", value, alg)
            except WrapError:
                raise E.UnwrapFailed(kid=_kid(kv, row)) from None
            return {"kid": _kid(kv, row), "alg": alg, "value": b64e(plain)}

    def _key_impl(self, kv: KeyVault, row: KvKey, op: str, data: bytes, alg: str) -> bytes:
        if not row.enabled:
            raise E.KeyDisabled(name=row.name, vault=kv.name)
        if row.protection == "hsm":
            if self.hsm is None:
                raise E.HsmNotConfigured(what="used")
            return getattr(self.hsm, op)(row.hsm_ref["label"], data)
        material = self.sealer.open(row.material, *_key_binding(kv.id, row.name, row.version))
        return getattr(SoftwareKey(row.kty, material), op)(data, alg)

    def _view_key(self, kv: KeyVault, row: KvKey) -> dict:
        out = {"kid": _kid(kv, row), "name": row.name, "version": row.version, "kty": row.kty + ("-HSM" if row.protection == "hsm" else ""),
               "size": row.size, "protection": row.protection, "enabled": row.enabled, "key_ops": ["wrapKey", "unwrapKey"],
               "tags": row.tags or {}, "created_at": row.created_at, "deleted_at": row.deleted_at, "scheduled_purge_at": row.purge_at}
        if row.public:
            out["public_key_pem"] = row.public
        return out

    def _key_doc(self, kv: KeyVault, rows: list[KvKey]) -> dict:
        versions = []
        for r in rows:
            v = {"version": r.version, "kty": r.kty, "size": r.size, "protection": r.protection, "public": r.public,
                 "hsm_ref": r.hsm_ref, "enabled": r.enabled, "tags": r.tags or {}, "created_at": r.created_at.isoformat()}
            if r.material is not None:
                v["material"] = b64e(self.sealer.open(r.material, *_key_binding(kv.id, r.name, r.version)))
            versions.append(v)
        return {"name": rows[0].name, "object_id": rows[0].object_id, "versions": versions}

    def _restore_key_doc(self, s, kv: KeyVault, doc: dict) -> dict:
        from datetime import datetime

        name = doc["name"]
        existing = s.scalars(select(KvKey).where(KvKey.vault_id == kv.id, KvKey.name == name)).all()
        self._merge_target(kv, existing, doc, "key")
        have = {r.version for r in existing}
        for r in existing:
            r.deleted_at = r.purge_at = None
        for v in doc["versions"]:
            if v["version"] in have:
                continue
            if v["protection"] == "hsm" and (self.hsm is None or not self.hsm.exists(v["hsm_ref"]["label"])):
                raise E.HsmError(token=(v.get("hsm_ref") or {}).get("token", "?"), reason=f"HSM key {v['hsm_ref']['label']!r} of {name!r} is not in the configured token")
            row = KvKey(id=new_id(), vault_id=kv.id, name=name, version=v["version"], object_id=doc["object_id"], kty=v["kty"],
                        size=v["size"], protection=v["protection"], public=v.get("public"), hsm_ref=v.get("hsm_ref"),
                        enabled=v.get("enabled", True), tags=v.get("tags") or {}, created_at=datetime.fromisoformat(v["created_at"]))
            if v.get("material"):
                row.material = self.sealer.seal(b64d(v["material"]), *_key_binding(kv.id, name, v["version"]))
            s.add(row)
        s.flush()
        return self._view_key(kv, self._key_row(s, kv, name))

    @staticmethod
    def _merge_target(kv, existing, doc, kind) -> None:
        if not existing:
            return
        if existing[0].object_id != doc["object_id"]:
            if all(r.deleted_at is not None for r in existing):
                raise E.ObjectDeletedConflict(kind=kind, name=doc["name"], vault=kv.name)
            raise E.ObjectExists(kind=kind, name=doc["name"], vault=kv.name)

    # ------------------------------------------------------------------ secrets
    def set_secret(self, caller: Caller, subscription: str, vault: str, name: str, value: str, content_type: str | None = None,
                   tags: dict | None = None) -> dict:
        _check_name("secret", name)
        if not isinstance(value, str) or len(value.encode()) > 25 * 1024:
            raise E.UserError("A secret value must be text of at most 25 KiB.", "Base64-encode binary values (such as a wrapped BEK).")
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "set")
            object_id = self._object_id_for_new_version(s, KvSecret, kv, name, "secret")
            version = _new_version()
            row = KvSecret(id=new_id(), vault_id=kv.id, name=name, version=version, object_id=object_id, content_type=content_type,
                           tags=dict(tags or {}), created_at=self._now(),
                           value=self.sealer.seal(value.encode(), *_secret_binding(kv.id, name, version)))
            s.add(row)
            s.flush()
            return self._view_secret(kv, row)

    def set_bek(self, caller: Caller, subscription: str, vault: str, name: str, disk_key: bytes, kek: str,
                alg: str | None = None) -> dict:
        """Store a disk's LUKS key as a BEK secret, wrapped by the KEK (the secret's tags name the KEK)."""
        wrapped = self.wrap(caller, subscription, vault, kek, disk_key, alg)
        return self.set_secret(caller, subscription, vault, name, wrapped["value"], content_type="application/x-haven-wrapped-bek",
                               tags={"kek": wrapped["kid"], "alg": wrapped["alg"], "method": "luks"})

    def _secret_row(self, s, kv, name, version=None) -> KvSecret:
        rows = self._versions(s, KvSecret, kv, name)
        if version:
            rows = [r for r in rows if r.version == version]
        if not rows:
            raise E.SecretNotFound(name=name if not version else f"{name}/{version}", vault=kv.name)
        return rows[-1]

    def show_secret(self, caller: Caller, subscription: str, vault: str, name: str, version: str | None = None) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "get")
            row = self._secret_row(s, kv, name, version)
            out = self._view_secret(kv, row)
            out["value"] = self.sealer.open(row.value, *_secret_binding(kv.id, name, row.version)).decode()
            return out

    def list_secrets(self, caller: Caller, subscription: str, vault: str, deleted: bool = False) -> list[dict]:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "list")
            latest: dict[str, KvSecret] = {}
            for r in s.scalars(select(KvSecret).where(KvSecret.vault_id == kv.id).order_by(KvSecret.version)):
                if (r.deleted_at is not None) == deleted:
                    latest[r.name] = r
            return [self._view_secret(kv, r) for _, r in sorted(latest.items())]

    def delete_secret(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._soft_delete(caller, subscription, vault, name, KvSecret, "secret")

    def recover_secret(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._recover(caller, subscription, vault, name, KvSecret, "secret")

    def purge_secret(self, caller: Caller, subscription: str, vault: str, name: str) -> None:
        self._purge(caller, subscription, vault, name, KvSecret, "secret")

    def backup_secret(self, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "backup")
            rows = self._versions(s, KvSecret, kv, name)
            if not rows:
                raise E.SecretNotFound(name=name, vault=vault)
            return {"name": name, "value": self.sealer.seal_blob("secret", self._secret_doc(kv, rows))}

    def restore_secret(self, caller: Caller, subscription: str, vault: str, blob: str) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "restore")  # access first, then the blob
            try:
                _, doc = self.sealer.open_blob(blob, ("secret",))
            except WrapError as exc:
                raise E.BackupBlobInvalid(reason=str(exc)) from None
            return self._restore_secret_doc(s, kv, doc)

    def _secret_doc(self, kv, rows: list[KvSecret]) -> dict:
        return {"name": rows[0].name, "object_id": rows[0].object_id, "versions": [
            {"version": r.version, "content_type": r.content_type, "tags": r.tags or {}, "created_at": r.created_at.isoformat(),
             "value": b64e(self.sealer.open(r.value, *_secret_binding(kv.id, r.name, r.version)))} for r in rows]}

    def _restore_secret_doc(self, s, kv: KeyVault, doc: dict) -> dict:
        from datetime import datetime

        name = doc["name"]
        existing = s.scalars(select(KvSecret).where(KvSecret.vault_id == kv.id, KvSecret.name == name)).all()
        self._merge_target(kv, existing, doc, "secret")
        have = {r.version for r in existing}
        for r in existing:
            r.deleted_at = r.purge_at = None
        for v in doc["versions"]:
            if v["version"] in have:
                continue
            s.add(KvSecret(id=new_id(), vault_id=kv.id, name=name, version=v["version"], object_id=doc["object_id"],
                           content_type=v.get("content_type"), tags=v.get("tags") or {}, created_at=datetime.fromisoformat(v["created_at"]),
                           value=self.sealer.seal(b64d(v["value"]), *_secret_binding(kv.id, name, v["version"]))))
        s.flush()
        return self._view_secret(kv, self._secret_row(s, kv, name))

    def _view_secret(self, kv: KeyVault, row: KvSecret) -> dict:
        return {"id": f"{kv.name}/secrets/{row.name}/{row.version}", "name": row.name, "version": row.version,
                "content_type": row.content_type, "tags": row.tags or {}, "created_at": row.created_at,
                "deleted_at": row.deleted_at, "scheduled_purge_at": row.purge_at}

    # ------------------------------------------------------------------ soft delete, shared
    def _soft_delete(self, caller, subscription, vault, name, model, kind) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, kind, "delete")
            rows = self._versions(s, model, kv, name)
            if not rows:
                raise (E.KeyNotFound if kind == "key" else E.SecretNotFound)(name=name, vault=vault)
            now = self._now()
            for r in rows:
                r.deleted_at, r.purge_at = now, now + timedelta(days=kv.retention_days)
            s.flush()
            return (self._view_key if kind == "key" else self._view_secret)(kv, rows[-1])

    def _recover(self, caller, subscription, vault, name, model, kind) -> dict:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, kind, "recover")
            rows = self._versions(s, model, kv, name, deleted=True)
            if not rows or self._versions(s, model, kv, name):
                raise (E.KeyNotFound if kind == "key" else E.SecretNotFound)(name=f"{name} (deleted)", vault=vault)
            for r in rows:
                r.deleted_at = r.purge_at = None
            s.flush()
            return (self._view_key if kind == "key" else self._view_secret)(kv, rows[-1])

    def _purge(self, caller, subscription, vault, name, model, kind) -> None:
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, kind, "purge")
            rows = self._versions(s, model, kv, name, deleted=True)
            if not rows:
                raise (E.KeyNotFound if kind == "key" else E.SecretNotFound)(name=f"{name} (deleted)", vault=vault)
            if kv.purge_protection:
                raise E.PurgeProtected(vault=vault, what=f"the {kind} {name!r}", purge_at=rows[-1].purge_at.isoformat())
            if model is KvKey:
                self._destroy_hsm_keys(s, rows)
            for r in rows:
                s.delete(r)

    # ------------------------------------------------------------------ the backup path (seed 003)
    def _system_vault(self, s, subscription: str | None, name: str, missing=None) -> KeyVault:
        """A key vault by name for the server itself (no caller): in ``subscription`` (name or id) or, if not given, anywhere."""
        self._purge_due(s)
        q = select(KeyVault).where(KeyVault.name == name, KeyVault.deleted_at.is_(None))
        if subscription:
            sub = self.core.subscriptions.find(s, subscription)
            q = q.where(KeyVault.subscription_id == sub.id)
        rows = s.scalars(q).all()
        if len(rows) > 1:
            raise E.KeyVaultAmbiguous(name=name, subscriptions=", ".join(r.subscription_id for r in rows))
        if not rows:
            raise (missing or E.KeyVaultNotFound(name=name, subscription=subscription or "any"))
        return rows[0]

    def _vm_key_vault(self, s, enc: dict, subscription: str | None) -> KeyVault:
        """The key vault an encrypted VM's settings name, in the protecting vault's ``subscription`` only.

        A subscription's backups never read (nor copy into its recovery points) another subscription's keys.
        """
        if subscription is None:
            return self._system_vault(s, enc["subscription"], enc["key_vault"])
        own = self.core.subscriptions.find(s, subscription)
        if enc["subscription"] and enc["subscription"] not in (own.id, own.name):
            raise E.KeyVaultNotFound(name=enc["key_vault"], subscription=enc["subscription"])
        return self._system_vault(s, own.id, enc["key_vault"], missing=E.KeyVaultNotFound(name=enc["key_vault"], subscription=own.name))

    def check_backup_access(self, vm_encryption: dict | None, subscription: str | None = None) -> None:
        """Before enabling backup and before every backup of a VM: ``None`` when it may be backed up.

        Raises ``BekOnlyEncryption`` (seed row 1), ``BackupServiceKeyVaultAccessDenied`` (row 5),
        ``KeyVaultNotFound``, ``KeyNotFound``/``SecretNotFound`` or ``EncryptionSettingsInvalid``.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        if enc["kek"] is None:
            raise E.BekOnlyEncryption(vm=enc["vm"])
        with self.core.db.session() as s:
            kv = self._vm_key_vault(s, enc, subscription)
            self._check_backup_principal(s, kv)
            self._key_row(s, kv, *enc["kek"])
            for name, version in enc["beks"]:
                self._secret_row(s, kv, name, version)

    def _check_backup_principal(self, s, kv: KeyVault) -> None:
        keys, secrets = self._perms(s, kv, self._backup_principal(s).id)
        missing = [f"keys:{p}" for p in BACKUP_NEEDS["keys"] if p not in keys] + [f"secrets:{p}" for p in BACKUP_NEEDS["secrets"] if p not in secrets]
        if missing:
            raise E.BackupServiceKeyVaultAccessDenied(key_vault=kv.name, missing=", ".join(missing))

    def backup_keys(self, vm_encryption: dict | None, subscription: str | None = None) -> dict | None:
        """The backup of the VM's KEK and BEK(s), to store with each recovery point (``None`` if not encrypted).

        The ``blob`` is sealed by this server's master key; the other fields are for display.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return None
        self.check_backup_access(vm_encryption, subscription)
        with self.core.db.session() as s:
            kv = self._vm_key_vault(s, enc, subscription)
            sub = s.get(Subscription, kv.subscription_id)
            kek_rows = self._versions(s, KvKey, kv, enc["kek"][0])
            bek_docs = [self._secret_doc(kv, self._versions(s, KvSecret, kv, n)) for n, _ in enc["beks"]]
            doc = {"key_vault": kv.name, "subscription_id": sub.id, "subscription": sub.name, "region": kv.region,
                   "settings": enc["raw"], "keys": [self._key_doc(kv, kek_rows)], "secrets": bek_docs,
                   "made_at": self._now().isoformat()}
            return {"format": VM_KEYS_FORMAT, "key_vault": kv.name, "subscription": sub.name, "region": kv.region,
                    "kek_key": enc["kek"][0], "bek_secrets": [n for n, _ in enc["beks"]],
                    "blob": self.sealer.seal_blob("vmkeys", doc)}

    def check_restore(self, vm_encryption: dict | None, subscription: str | None = None) -> None:
        """Before restoring an encrypted VM's disks: its key vault, KEK and BEK(s) must exist.

        Raises ``KeyVaultMissingForRestore`` (seed row 2) or ``KeysMissingForRestore`` (row 3).
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        with self.core.db.session() as s:
            kv = self._system_vault(s, enc["subscription"] or subscription, enc["key_vault"],
                                    missing=E.KeyVaultMissingForRestore(key_vault=enc["key_vault"]))
            missing = []
            if enc["kek"] is not None and not [r for r in self._versions(s, KvKey, kv, enc["kek"][0]) if enc["kek"][1] in (None, r.version)]:
                missing.append(f"key {enc['kek'][0]}")
            for name, version in enc["beks"]:
                if not [r for r in self._versions(s, KvSecret, kv, name) if version in (None, r.version)]:
                    missing.append(f"secret {name}")
            if missing:
                raise E.KeysMissingForRestore(key_vault=kv.name, missing=", ".join(missing))

    def check_restore_vm(self, vm_encryption: dict | None, subscription: str | None = None) -> None:
        """Before *creating a VM* (not just its disks) from a recovery point of an encrypted VM.

        The backup service holds only the ``Haven Backup`` permissions (get, list, backup): it has no
        access to the keys it would need to attach the encrypted disks to a new VM (seed row 4), so the
        restore must be: restore disks, then create the VM from them. Raises
        ``BackupServiceNoAccessForRestore`` unless the backup principal was also given
        ``keys: unwrapKey`` and ``secrets: get`` on the key vault.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        self.check_restore(vm_encryption, subscription)
        with self.core.db.session() as s:
            kv = self._system_vault(s, enc["subscription"] or subscription, enc["key_vault"])
            keys, secrets = self._perms(s, kv, self._backup_principal(s).id)
            if "unwrapKey" not in keys or "get" not in secrets:
                sub = s.get(Subscription, kv.subscription_id)
                raise E.BackupServiceNoAccessForRestore(subscription=sub.name)

    def restore_keys_from_backup(self, backup: dict | str, caller: Caller | None = None, subscription: str | None = None,
                                 key_vault: str | None = None, what: Iterable[str] = ("keys", "secrets")) -> dict:
        """Bring back a VM's KEK and BEK(s) (from ``backup_keys``) into their key vault, or into ``key_vault``.

        With a ``caller`` (the CLI's ``restore-key``/``restore-secret``), the caller needs Reader on the
        subscription and ``keys: restore`` / ``secrets: restore`` in the target key vault; without one the
        server does it itself. The target key vault must exist (``KeyVaultMissingForRestore`` otherwise).
        Idempotent: versions already present are kept; soft-deleted ones are recovered.
        """
        blob = backup.get("blob") if isinstance(backup, dict) else backup
        if caller is not None and subscription and key_vault:  # access first, then the blob
            with self.core.db.session() as s:
                self._sub(s, caller, subscription, Role.READER)
        try:
            _, doc = self.sealer.open_blob(blob or "", ("vmkeys",))
        except WrapError as exc:
            raise E.BackupBlobInvalid(reason=str(exc)) from None
        what = set(what)
        target = key_vault or doc["key_vault"]
        with self.core.db.session() as s:
            sub_ref = subscription or doc["subscription_id"]
            if caller is not None:
                try:
                    kv = self._data(s, caller, sub_ref, target, "key" if "keys" in what else "secret", "restore")
                except E.KeyVaultNotFound:
                    raise E.KeyVaultMissingForRestore(key_vault=target) from None
                if "secrets" in what and "keys" in what:
                    self._data(s, caller, sub_ref, target, "secret", "restore")
            else:
                kv = self._system_vault(s, sub_ref, target, missing=E.KeyVaultMissingForRestore(key_vault=target))
            out: dict[str, list] = {"key_vault": kv.name, "keys": [], "secrets": []}
            if "keys" in what:
                out["keys"] = [self._restore_key_doc(s, kv, d) for d in doc["keys"]]
            if "secrets" in what:
                out["secrets"] = [self._restore_secret_doc(s, kv, d) for d in doc["secrets"]]
            return out

    def restore_from_recovery_point(self, caller: Caller, subscription: str, vault: str, vm: str, point: str,
                                    what: Iterable[str], key_vault: str | None = None) -> dict:
        """``haven keyvault restore-key|restore-secret --recovery-point``: the point's key backup, restored."""
        with self.core.db.session() as s:  # access first
            self._sub(s, caller, subscription, Role.READER)
        if self.recovery_point_key_backup is None:
            raise E.BackupBlobInvalid(reason="this server's protection service does not expose recovery points' key backups yet")
        backup = self.recovery_point_key_backup(caller, subscription, vault, vm, point)
        if not backup:
            raise E.BackupBlobInvalid(reason=f"recovery point {point!r} of {vm!r} holds no key backup (the VM was not encrypted)")
        return self.restore_keys_from_backup(backup, caller=caller, subscription=subscription, key_vault=key_vault, what=what)

    def unwrap_bek(self, caller: Caller | None, subscription: str | None, vault: str, secret: str, version: str | None = None) -> bytes:
        """The disk key a BEK secret holds, unwrapped by the KEK its tags name (fails closed on a wrong KEK)."""
        with self.core.db.session() as s:
            if caller is not None:
                kv = self._data(s, caller, subscription, vault, "secret", "get")
                self._data(s, caller, subscription, vault, "key", "unwrapKey")
            else:
                kv = self._system_vault(s, subscription, vault)
            row = self._secret_row(s, kv, secret, version)
            value = self.sealer.open(row.value, *_secret_binding(kv.id, row.name, row.version)).decode()
            kek = (row.tags or {}).get("kek")
            if not kek:
                raise E.BekOnlyEncryption(vm=f" (secret {secret!r})")
            _, _, kname, kversion = (kek.split("/") + [None])[:4]
            key = self._key_row(s, kv, kname, kversion)
            try:
                return self._key_impl(kv, key, "unwrap", b64d(value), _alg(key, (row.tags or {}).get("alg")))
            except WrapError:
                raise E.UnwrapFailed(kid=_kid(kv, key)) from None

    def key_wrapper(self, subscription: str, vault: str, key: str) -> "KeyVaultKeyWrapper":
        """A ``haven.engine.keys.KeyWrapper`` backed by a key vault KEK (for vaults' data keys)."""
        return KeyVaultKeyWrapper(self, subscription, vault, key)


class KeyVaultKeyWrapper:
    """Wraps with the key's newest version; unwraps with the version named in the wrapped bytes,
    so a rotated KEK (a new version) still opens what older versions wrapped."""

    def __init__(self, service: KeyVaultService, subscription: str, vault: str, key: str):
        self.service, self.subscription, self.vault, self.key = service, subscription, vault, key
        self.key_id = f"keyvault:{vault}/keys/{key}"

    def wrap(self, plaintext: bytes) -> bytes:
        out = self.service.wrap(None, self.subscription, self.vault, self.key, plaintext)
        version = out["kid"].rsplit("/", 1)[1]
        return b"HKW1" + version.encode() + b64d(out["value"])

    def unwrap(self, wrapped: bytes) -> bytes:
        from haven.engine.keys import UnwrapFailed as EngineUnwrapFailed

        if wrapped[:4] != b"HKW1" or len(wrapped) < 36:
            raise EngineUnwrapFailed("not wrapped by a key vault key")
        try:
            out = self.service.unwrap(None, self.subscription, self.vault, self.key, wrapped[36:], version=wrapped[4:36].decode())
        except (E.UnwrapFailed, E.KeyNotFound) as exc:
            raise EngineUnwrapFailed(str(exc)) from exc
        return b64d(out["value"])


# ---------------------------------------------------------------------- helpers
def _new_version() -> str:
    """32 hex digits that sort by creation (wall-clock nanoseconds, then randomness)."""
    import secrets
    import time

    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _key_binding(vault_id: str, name: str, version: str) -> tuple[str, ...]:
    return ("key", vault_id, name, version)


def _secret_binding(vault_id: str, name: str, version: str) -> tuple[str, ...]:
    return ("secret", vault_id, name, version)


def _kid(kv: KeyVault, row: KvKey) -> str:
    return f"{kv.name}/keys/{row.name}/{row.version}"


def _alg(row: KvKey, alg: str | None) -> str:
    allowed = RSA_ALGS if row.kty == "RSA" else AES_ALGS
    alg = alg or allowed[0]
    if alg not in allowed:
        raise E.AlgorithmInvalid(alg=alg, kty=row.kty, name=row.name, allowed=", ".join(allowed))
    return alg


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _OBJ_NAME.fullmatch(name):
        raise E.ObjectNameInvalid(kind=kind, name=name)


def _check_perms(kind: str, perms: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    perms = [p.strip() for p in perms if p and p.strip()]
    if any(p.lower() == "all" for p in perms):
        return list(allowed)
    by_lower = {a.lower(): a for a in allowed}
    bad = [p for p in perms if p.lower() not in by_lower]
    if bad:
        raise E.PermissionInvalid(kind=kind, bad=", ".join(bad), allowed=", ".join(allowed))
    return sorted({by_lower[p.lower()] for p in perms}, key=allowed.index)


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

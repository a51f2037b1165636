"""The key vault's management plane: create, list, show, update, delete (soft), recover and purge a key
vault, set and delete access policies. It needs a subscription role: Reader to read, Contributor to change."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Iterable

from sqlalchemy import select

from haven.db.models import Principal, Subscription
from haven.domain.enums import Role
from haven.keyvault import errors as E
from haven.keyvault.permissions import BACKUP_PRINCIPAL, KEY_PERMISSIONS, SECRET_PERMISSIONS, TEMPLATES
from haven.keyvault.tables import KeyVault, KvAccessPolicy, KvKey
from haven.services.auth import Caller
from haven.services.keyvault.base import KeyVaultBase

__all__ = ["VaultManagement"]

_KV_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")


def _check_perms(kind: str, perms: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    perms = [p.strip() for p in perms if p and p.strip()]
    if any(p.lower() == "all" for p in perms):
        return list(allowed)
    by_lower = {a.lower(): a for a in allowed}
    bad = [p for p in perms if p.lower() not in by_lower]
    if bad:
        raise E.PermissionInvalid(kind=kind, bad=", ".join(bad), allowed=", ".join(allowed))
    return sorted({by_lower[p.lower()] for p in perms}, key=allowed.index)


class VaultManagement(KeyVaultBase):
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
            kv, p, row = self._policy(s, caller, subscription, name, principal)
            if row is None:
                row = KvAccessPolicy(vault_id=kv.id, principal_id=p.id)
                s.add(row)
            row.key_permissions, row.secret_permissions = keys, secrets
            s.flush()
            return {"principal": p.name, "key_permissions": keys, "secret_permissions": secrets}

    def delete_policy(self, caller: Caller, subscription: str, name: str, principal: str) -> None:
        with self.core.db.session() as s:
            _, _, row = self._policy(s, caller, subscription, name, principal)
            if row is None:
                raise E.PolicyNotFound(vault=name, principal=principal)
            s.delete(row)

    def _policy(self, s, caller: Caller, subscription: str, name: str, principal: str) -> tuple[KeyVault, Principal, KvAccessPolicy | None]:
        """For changing a policy (Contributor): the key vault, the principal and its policy there, if any."""
        sub = self._sub(s, caller, subscription, Role.CONTRIBUTOR)
        kv = self._vault(s, sub, name)
        p = self._principal(s, principal)
        return kv, p, s.scalar(select(KvAccessPolicy).where(KvAccessPolicy.vault_id == kv.id, KvAccessPolicy.principal_id == p.id))

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

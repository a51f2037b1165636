"""The key vault service's plumbing: the master key's sealer, the HSM, the clock, lookups, the access gate
and the purge of what outlived its retention. The other modules of this package build on it."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import select

from haven.db.models import Principal, Subscription
from haven.domain.enums import PrincipalKind, Role
from haven.keyvault import errors as E
from haven.keyvault.crypto import Sealer
from haven.keyvault.permissions import BACKUP_PRINCIPAL
from haven.keyvault.tables import KeyVault, KvAccessPolicy, KvKey
from haven.services.auth import Caller
from haven.services.keyvault.kinds import KINDS

__all__ = ["KeyVaultBase"]


class KeyVaultBase:
    def __init__(self, core: Any):
        self.core = core
        self._sealer: Sealer | None = None
        self._hsm = None
        self._hsm_loaded = False
        #: ``(caller, subscription, vault, vm, point) -> backup dict``; the protection service sets it
        #: so that ``restore-key/restore-secret --recovery-point`` find the recovery point's key backup.
        self.recovery_point_key_backup: Callable[..., dict] | None = None

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
        for kind in KINDS.values():
            model = kind.model
            rows = s.scalars(select(model).where(model.purge_at.is_not(None), model.purge_at <= now)).all()
            kind.before_purge(self, s, rows)
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

"""Vaults: create (with DefaultPolicy and initialised storage), list, show, delete, redundancy."""

from __future__ import annotations

from sqlalchemy import func, select

from haven.db.models import Policy, ProtectedItem, RecoveryPoint, Vault
from haven.db.types import new_id
from haven.domain.enums import ProtectionState, Role
from haven.domain.vault import (
    Immutability,
    Redundancy,
    check_immutability_change,
    check_soft_delete_change,
    VaultNotEmpty,
    check_redundancy_change,
    validate_vault_name,
    vault_name_key,
)
from haven.errors import Conflict, NotFound, UserError
from haven.services.auth import Caller

__all__ = ["VaultService", "VaultNotFound", "VaultAlreadyExists"]


class VaultNotFound(NotFound):
    code = "UserErrorVaultNotFound"
    message = "Vault {name!r} does not exist in subscription {subscription!r}."
    recommendation = "List the vaults with 'haven vault list --subscription {subscription}'."


class VaultAlreadyExists(Conflict):
    code = "UserErrorVaultAlreadyExists"
    message = "A vault named {name!r} already exists in subscription {subscription!r}; vault names are unique within a subscription (ignoring case)."
    recommendation = "Choose another name, or use the existing vault."


class KeyVaultRegionMismatch(UserError):
    code = "UserErrorKeyVaultRegionMismatch"
    message = "Key vault {key_vault!r} is in region {kv_region!r}; vault {vault!r} is in {region!r}. A vault's key must be in its region."
    recommendation = "Create a key vault in region {region!r} (haven keyvault create --region {region}) and a key there."


class EncryptionKeyNotSet(Conflict):
    code = "UserErrorVaultEncryptionKeyNotSet"
    message = "Vault {vault!r} uses the server's master key; there is no key-vault key to rotate."
    recommendation = "Set one first: haven vault encryption-key set --key-vault KV --key KEY."


class RedundancyInvalid(UserError):
    code = "UserErrorStorageRedundancyInvalid"
    message = "Storage redundancy {value!r} is not available here: {reason}"
    recommendation = "Use LRS, or GRS in a region that has a paired region configured."


class VaultService:
    def __init__(self, core):
        self.core = core

    # ---- lookups used by every service under a vault ----
    def find(self, s, caller: Caller, subscription: str, name: str, needed: Role = Role.READER) -> Vault:
        sub = self.core.subscriptions.get_visible(s, caller, subscription, needed)
        vault = s.scalar(select(Vault).where(Vault.subscription_id == sub.id, Vault.name_key == vault_name_key(name)))
        if vault is None:
            raise VaultNotFound(name=name, subscription=subscription)
        return vault

    # ---- use cases ----
    def create(self, caller: Caller, subscription: str, name: str, region: str, redundancy: str | None = None) -> dict:
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.CONTRIBUTOR)
            validate_vault_name(name)
            region_cfg = self.core.regions.require(region)
            wanted = self._redundancy(redundancy, region_cfg)
            if s.scalar(select(Vault.id).where(Vault.subscription_id == sub.id, Vault.name_key == vault_name_key(name))):
                raise VaultAlreadyExists(name=name, subscription=subscription)
            vault_id = new_id()
            vault = Vault(
                id=vault_id, subscription_id=sub.id, name=name, name_key=vault_name_key(name), region=region,
                redundancy=wanted.value, storage_url=f"{region_cfg.storage_url.rstrip('/')}/{vault_id}",
                created_at=self.core.clock.now(),
            )
            s.add(vault)
            s.flush()
            self.core.policies.add_default(s, vault)
            # Storage last: if it fails, the transaction rolls back and nothing is left behind.
            self.core.storage.init_vault(vault, sub)
            return self.view(s, vault)

    def list(self, caller: Caller, subscription: str) -> list[dict]:
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription)
            vaults = s.scalars(select(Vault).where(Vault.subscription_id == sub.id).order_by(Vault.name)).all()
            return [self.view(s, v) for v in vaults]

    def show(self, caller: Caller, subscription: str, name: str) -> dict:
        with self.core.db.session() as s:
            return self.view(s, self.find(s, caller, subscription, name))

    def delete(self, caller: Caller, subscription: str, name: str) -> None:
        with self.core.db.session() as s:
            vault = self.find(s, caller, subscription, name, Role.CONTRIBUTOR)
            items, points = self._counts(s, vault.id, include_stopped=True)
            if items or points:
                raise VaultNotEmpty(vault=vault.name, items=items, points=points)
            s.delete(vault)

    def set_properties(self, caller: Caller, subscription: str, name: str, redundancy: str | None = None,
                       soft_delete_days: int | None = None, immutability: str | None = None,
                       approval_id: str | None = None) -> dict:
        """Storage redundancy (until items are protected), soft-delete period, immutability."""
        with self.core.db.session() as s:
            vault = self.find(s, caller, subscription, name, Role.CONTRIBUTOR)
            wanted = None
            if redundancy is not None:
                wanted = self._redundancy(redundancy, self.core.regions.require(vault.region))
                protected, _ = self._counts(s, vault.id, include_stopped=True)
                check_redundancy_change(vault.name, Redundancy(vault.redundancy), wanted, protected)
            if immutability is not None:
                check_immutability_change(vault.name, Immutability(vault.immutability), Immutability(immutability))
            if soft_delete_days is not None:
                check_soft_delete_change(vault.name, Immutability(immutability or vault.immutability), vault.soft_delete_days, soft_delete_days)
            self.core.guard.check_properties(s, caller, vault, redundancy, soft_delete_days, immutability, approval_id)
            if wanted is not None:
                vault.redundancy = wanted.value
            if immutability is not None:
                vault.immutability = immutability
            if soft_delete_days is not None:
                vault.soft_delete_days = soft_delete_days
            return self.view(s, vault)

    def set_encryption_key(self, caller: Caller, subscription: str, name: str, key_vault: str | None, key: str | None) -> dict:
        """Wrap the vault's data key with a key-vault KEK (or, with None, the server's master key again).

        The key vault must be in the vault's subscription and region, and the key must exist. Only the
        wrapped data key changes; chunks and manifests stay as they are.
        """
        with self.core.db.session() as s:
            vault = self.find(s, caller, subscription, name, Role.CONTRIBUTOR)
            if key_vault and key:
                kv = self.core.keyvault.show(caller, subscription, key_vault)
                if kv.get("region") != vault.region:
                    raise KeyVaultRegionMismatch(vault=vault.name, region=vault.region, key_vault=key_vault, kv_region=kv.get("region"))
                self.core.keyvault.show_key(caller, subscription, key_vault, key)  # exists, and the caller may see it
                new_kek = self.core.keyvault.key_wrapper(vault.subscription_id, key_vault, key)
            else:
                key_vault = key = None
                new_kek = self.core.storage.kek()
            self.core.storage.rewrap(vault, new_kek)
            vault.kek_key_vault, vault.kek_key = key_vault, key
            return self.view(s, vault)

    def rotate_encryption_key(self, caller: Caller, subscription: str, name: str) -> dict:
        """A new version of the vault's key-vault KEK, and the data key re-wrapped with it."""
        with self.core.db.session() as s:
            vault = self.find(s, caller, subscription, name, Role.CONTRIBUTOR)
            if not vault.kek_key:
                raise EncryptionKeyNotSet(vault=vault.name)
            key = self.core.keyvault.show_key(caller, subscription, vault.kek_key_vault, vault.kek_key)
            self.core.keyvault.create_key(caller, subscription, vault.kek_key_vault, vault.kek_key, key.get("kty", "RSA"))
            self.core.storage.rewrap(vault, self.core.storage.kek_for(vault))
            return self.view(s, vault)

    # ---- helpers ----
    def _redundancy(self, value: str | None, region_cfg) -> Redundancy:
        if value is None:
            return Redundancy.GRS if region_cfg.paired_region else Redundancy.LRS
        try:
            wanted = Redundancy(value.upper() if isinstance(value, str) else value)
        except ValueError:
            raise RedundancyInvalid(value=value, reason="it must be LRS or GRS.") from None
        if wanted is Redundancy.GRS and not region_cfg.paired_region:
            raise RedundancyInvalid(value=value, reason=f"region {region_cfg.name!r} has no paired region to replicate to.")
        return wanted

    def _counts(self, s, vault_id: str, include_stopped: bool) -> tuple[int, int]:
        states = [ProtectionState.PROTECTED.value]
        if include_stopped:
            states += [ProtectionState.PROTECTION_STOPPED.value, ProtectionState.SOFT_DELETED.value]
        items = s.scalar(select(func.count()).select_from(ProtectedItem).where(ProtectedItem.vault_id == vault_id, ProtectedItem.state.in_(states)))
        points = s.scalar(select(func.count()).select_from(RecoveryPoint).where(RecoveryPoint.vault_id == vault_id))
        return int(items or 0), int(points or 0)

    def view(self, s, vault: Vault) -> dict:
        items, points = self._counts(s, vault.id, include_stopped=True)
        stored = s.scalar(select(func.coalesce(func.sum(RecoveryPoint.stored_bytes), 0)).where(RecoveryPoint.vault_id == vault.id))
        policies = s.scalar(select(func.count()).select_from(Policy).where(Policy.vault_id == vault.id))
        return {
            "id": vault.id,
            "name": vault.name,
            "subscription_id": vault.subscription_id,
            "region": vault.region,
            "state": "Active",  # a vault exists until its deletion, which is immediate: no other state to show
            "storage_redundancy": vault.redundancy,
            "storage_redundancy_locked": items > 0,
            "soft_delete_days": vault.soft_delete_days,
            "immutability": vault.immutability,
            "encryption_key": f"{vault.kek_key_vault}/keys/{vault.kek_key}" if vault.kek_key else "server master key",
            "alert_webhook": vault.alert_webhook,
            "alert_email": vault.alert_email,
            "protected_items": items,
            "recovery_points": points,
            "policies": int(policies or 0),
            "stored_bytes": int(stored or 0),
            "resource_guard": self.core.guard.guard_of(s, vault.id),
            "created_at": vault.created_at,
        }

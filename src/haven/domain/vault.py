"""Vault rules from the seeds: names, regions, storage redundancy."""

from __future__ import annotations

import re
from enum import StrEnum

from haven.errors import Conflict, UserError

__all__ = [
    "Immutability",
    "ImmutabilityLocked",
    "SoftDeletePeriodInvalid",
    "check_immutability_change",
    "check_soft_delete_change",
    "retention_reduced",
    "Redundancy",
    "VaultNameInvalid",
    "RedundancyLocked",
    "VaultNotEmpty",
    "validate_vault_name",
    "vault_name_key",
    "check_redundancy_change",
]

# 2-50 characters, starting with a letter, of letters, digits and hyphens (seed 000/001).
_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,49}$")


class Redundancy(StrEnum):
    LRS = "LRS"  # locally redundant: the region's storage only
    GRS = "GRS"  # geo-redundant: replicated to the paired region's storage


class Immutability(StrEnum):
    DISABLED = "Disabled"
    ENABLED = "Enabled"  # no deletion before expiry, no retention reduction; can be disabled again
    LOCKED = "Locked"  # as Enabled, and can never be undone

    @property
    def protects(self) -> bool:
        return self is not Immutability.DISABLED


class ImmutabilityLocked(Conflict):
    code = "UserErrorImmutabilityLocked"
    message = "Vault {vault!r} is immutable and locked: {operation} is not allowed, and a lock cannot be undone."
    recommendation = "Recovery points leave the vault only when they expire; create a new vault for data with other rules."


class ImmutabilityChangeInvalid(Conflict):
    code = "UserErrorImmutabilityChangeInvalid"
    message = "Vault {vault!r} cannot go from immutability {current} to {wanted}."
    recommendation = "Enable immutability first, then lock it once you are sure; a locked vault stays locked."


class SoftDeletePeriodInvalid(Conflict):
    code = "UserErrorSoftDeletePeriodReduction"
    message = "The soft-delete period of immutable vault {vault!r} cannot be shortened from {current} to {wanted} days."
    recommendation = "Keep the period, or lengthen it; shortening is allowed only while immutability is disabled."


class VaultNameInvalid(UserError):
    code = "UserErrorVaultNameInvalid"
    message = (
        "The vault name {name!r} is invalid: a vault name has 2 to 50 characters, starts with a "
        "letter and contains only letters, digits and hyphens."
    )
    recommendation = "Choose a name such as 'vault-prod-01' that follows these rules."


class RedundancyLocked(Conflict):
    code = "UserErrorStorageRedundancyLocked"
    message = (
        "The storage redundancy of vault {vault!r} cannot be changed: the vault already protects "
        "{count} item(s). Redundancy is chosen right after the vault is created, before any item is protected."
    )
    recommendation = (
        "Create a new vault with the redundancy you want and protect the VMs there, or stop protection "
        "and delete the backup data of every item in this vault first."
    )


class VaultNotEmpty(Conflict):
    code = "UserErrorVaultNotEmpty"
    message = "Vault {vault!r} cannot be deleted: it holds {items} protected item(s) and {points} recovery point(s)."
    recommendation = "Stop protection with 'delete backup data' for every item (haven protection disable --delete-backup-data), then delete the vault."


def validate_vault_name(name: str) -> str:
    if not isinstance(name, str) or not _VAULT_NAME.fullmatch(name):
        raise VaultNameInvalid(name=name)
    return name


def vault_name_key(name: str) -> str:
    """Vault names are unique within a subscription, ignoring case."""
    return name.lower()


def check_redundancy_change(vault: str, current: Redundancy, wanted: Redundancy, protected_items: int) -> None:
    if current != wanted and protected_items > 0:
        raise RedundancyLocked(vault=vault, count=protected_items)


def check_immutability_change(vault: str, current: Immutability, wanted: Immutability) -> None:
    if current is wanted:
        return
    if current is Immutability.LOCKED:
        raise ImmutabilityLocked(vault=vault, operation=f"changing immutability to {wanted.value}")
    if current is Immutability.DISABLED and wanted is Immutability.LOCKED:
        raise ImmutabilityChangeInvalid(vault=vault, current=current.value, wanted=wanted.value)


def check_soft_delete_change(vault: str, immutability: Immutability, current: int, wanted: int) -> None:
    if immutability.protects and wanted < current:
        raise SoftDeletePeriodInvalid(vault=vault, current=current, wanted=wanted)


def retention_reduced(old: dict, new: dict) -> list[str]:
    """The retention tiers that ``new`` keeps for less time than ``old`` (or drops)."""
    reduced = []
    for tier in ("daily_days", "weekly_weeks", "monthly_months", "yearly_years"):
        before, after = old.get(tier), new.get(tier)
        if before is not None and (after is None or after < before):
            reduced.append(tier)
    return reduced

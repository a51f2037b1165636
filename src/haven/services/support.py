"""The support matrix's rules that are checked when protection is enabled or data is deleted.

Each rule raises a typed error with its fix; ``docs/support-matrix.md`` lists them all, with the
seeds' limitations they come from.
"""

from __future__ import annotations

from haven.errors import Conflict, UserError

__all__ = ["SupportRules", "MAX_DATA_DISKS"]

#: seeds 000-004: VMs with more than 16 data disks are not supported.
MAX_DATA_DISKS = 16


class TooManyDataDisks(UserError):
    code = "UserErrorTooManyDataDisks"
    message = "VM {vm!r} has {count} data disks; backup supports at most {limit} data disks per VM."
    recommendation = "Exclude data disks you do not need to protect (--exclude-disks) so that at most {limit} remain, or split the data across VMs."


class ImmutableVaultRefuses(Conflict):
    code = "UserErrorImmutableVaultOperationNotAllowed"
    message = "Vault {vault!r} is immutable ({state}): {operation} is not allowed."
    recommendation = "Wait until the recovery points expire; a locked immutable vault cannot be made mutable again."


class SupportRules:
    def __init__(self, core):
        self.core = core

    def check_protectable(self, vm_info: dict) -> None:
        disks = vm_info.get("disks", [])
        data_disks = max(0, len(disks) - 1)  # the first disk is the OS disk
        if data_disks > MAX_DATA_DISKS:
            raise TooManyDataDisks(vm=vm_info.get("name"), count=data_disks, limit=MAX_DATA_DISKS)

    def check_deletion_allowed(self, vault) -> None:
        if vault.immutability in ("Enabled", "Locked"):
            raise ImmutableVaultRefuses(vault=vault.name, state=vault.immutability, operation="deleting backup data before it expires")

    def check_retention_change(self, vault, policy, retention) -> None:
        from haven.domain.vault import retention_reduced

        if vault.immutability not in ("Enabled", "Locked"):
            return
        reduced = retention_reduced(policy.retention or {}, retention.to_dict())
        if reduced:
            raise ImmutableVaultRefuses(vault=vault.name, state=vault.immutability,
                                        operation=f"reducing the retention of policy {policy.name!r} ({', '.join(reduced)})")

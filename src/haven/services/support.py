"""The support matrix's rules that are checked when protection is enabled or data is deleted.

Each rule raises a typed error with its fix; ``docs/support-matrix.md`` lists them all, with the
seeds' limitations they come from.
"""

from __future__ import annotations

from typing import Any

from haven.domain.guest import MIN_WINDOWS_NT, GuestOsUnsupported, classify_guest_os
from haven.errors import Conflict, UserError

__all__ = ["SupportRules", "MAX_DATA_DISKS", "MIN_WINDOWS_NT", "classify_guest_os", "GuestOsUnsupported", "TooManyDataDisks"]

#: seeds 000-004: VMs with more than 16 data disks are not supported.
MAX_DATA_DISKS = 16


class TooManyDataDisks(UserError):
    code = "UserErrorTooManyDataDisks"
    message = "VM {vm!r} has {count} data disks to back up; backup supports at most {limit} data disks per VM."
    recommendation = ("Exclude data disks you do not need to protect so that at most {limit} remain: list them with "
                      "'haven -o json vm list' (each VM's \"disks\"), then add e.g. '{example}' to "
                      "'haven protection enable-for-vm'; or split the data across VMs.")


class ImmutableVaultRefuses(Conflict):
    code = "UserErrorImmutableVaultOperationNotAllowed"
    message = "Vault {vault!r} is immutable ({state}): {operation} is not allowed."
    recommendation = "Wait until the recovery points expire; a locked immutable vault cannot be made mutable again."


class SupportRules:
    def __init__(self, core):
        self.core = core

    def check_protectable(self, vm_info: dict, include_disks: list[str] | None = None,
                          exclude_disks: list[str] | None = None) -> None:
        """Raise the first support-matrix rule the VM breaks (called when protection is enabled)."""
        for rule in self.evaluate(vm_info, include_disks, exclude_disks):
            if rule["status"] == "fail" and rule.get("error") is not None:
                raise rule["error"]

    def evaluate(self, vm_info: dict, include_disks: list[str] | None = None,
                 exclude_disks: list[str] | None = None) -> list[dict[str, Any]]:
        """Every support-matrix rule for one VM: ``{"rule", "status": pass|warn|fail, "reason", "fix", "code", "error"}``.

        ``haven prepare check`` shows them; ``check_protectable`` raises the failing ones' errors. Only the disks
        the backup takes (``include_disks`` / ``exclude_disks``, as the protected item selects them) count.
        """
        name = vm_info.get("name")
        out: list[dict[str, Any]] = []
        disks = [d.get("name") for d in vm_info.get("disks", [])]
        data = disks[1:]  # the first disk is the OS disk
        if include_disks:
            data = [d for d in data if d in include_disks]
        elif exclude_disks:
            data = [d for d in data if d not in exclude_disks]
        data_disks = len(data)
        if data_disks > MAX_DATA_DISKS:
            example = " ".join(f"--exclude-disks {d}" for d in data[MAX_DATA_DISKS:])
            out.append(_fail("data-disks", TooManyDataDisks(vm=name, count=data_disks, limit=MAX_DATA_DISKS, example=example)))
        else:
            out.append(_rule("data-disks", "pass", f"{data_disks} data disk(s), at most {MAX_DATA_DISKS} are supported"))
        agent = vm_info.get("guest_agent") or {}
        os_info = agent.get("os") or {}
        family, label, problem = classify_guest_os(os_info)
        if family == "unknown":
            out.append(_rule("guest-os", "warn", "the guest OS is unknown: the guest agent has not reported it "
                             "(VM stopped, or no agent answering)",
                             "Start the VM with qemu-guest-agent running so that its OS is checked; see docs/guides/guest-agent.md."))
        elif problem:
            out.append(_fail("guest-os", GuestOsUnsupported(vm=name, os=label, reason=problem)))
        elif family == "other":
            out.append(_rule("guest-os", "warn", f"{label} is not in the support matrix (Linux and Windows are); "
                             "backups run but are not tested for it", "Prefer a Linux or Windows guest; see docs/support-matrix.md."))
        else:
            out.append(_rule("guest-os", "pass", f"{label} is supported"))
        return out
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


def _rule(rule: str, status: str, reason: str, fix: str | None = None, code: str | None = None, error=None) -> dict[str, Any]:
    return {"rule": rule, "status": status, "reason": reason, "fix": fix, "code": code, "error": error}


def _fail(rule: str, err) -> dict[str, Any]:
    return _rule(rule, "fail", err.text, err.fix, err.code, err)

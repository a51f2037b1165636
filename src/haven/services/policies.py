"""Backup policies of a vault: schedule + retention. Every vault gets ``DefaultPolicy``."""

from __future__ import annotations

import re

from sqlalchemy import select

from haven.db.models import Policy, ProtectedItem, Vault, VirtualMachine
from haven.domain.enums import ProtectionState, Role
from haven.domain.schedule import DEFAULT_POLICY_RETENTION, DEFAULT_POLICY_SCHEDULE, Retention, Schedule
from haven.errors import Conflict, HavenError, NotFound, UserError
from haven.services.auth import Caller

__all__ = ["PolicyService", "PolicyNotFound", "DEFAULT_POLICY_NAME", "parse_policy", "policy_problems"]

DEFAULT_POLICY_NAME = "DefaultPolicy"
_POLICY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,149}$")


class PolicyNotFound(NotFound):
    code = "UserErrorPolicyNotFound"
    message = "Policy {name!r} does not exist in vault {vault!r}."
    recommendation = "List the vault's policies with 'haven policy list --vault {vault}'."


class PolicyNameInvalid(UserError):
    code = "UserErrorPolicyNameInvalid"
    message = "The policy name {name!r} is invalid: 1 to 150 letters, digits, hyphens or underscores, starting with a letter."
    recommendation = "Choose a name such as 'daily-30d'."


class PolicyAlreadyExists(Conflict):
    code = "UserErrorPolicyAlreadyExists"
    message = "A policy named {name!r} already exists in vault {vault!r}."
    recommendation = "Choose another name, or change the existing policy with 'haven policy set'."


class PolicyInUse(Conflict):
    code = "UserErrorPolicyInUse"
    message = "Policy {name!r} protects {count} item(s) and cannot be deleted."
    recommendation = "Move the items to another policy (haven item set-policy) or stop their protection first."


class PolicyBodyInvalid(UserError):
    code = "UserErrorPolicyInvalid"
    message = "The policy definition is invalid: {reason}"
    recommendation = "Give 'schedule' and 'retention' objects as documented (see 'haven policy show --name DefaultPolicy' for an example)."


def policy_problems(name: str, schedule: dict, retention: dict) -> list[HavenError]:
    """Every problem of a new policy at once (the name, the schedule, the retention, and the two together),
    for forms that show them all; ``parse_policy`` stops at the first."""
    found: list[HavenError] = []
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
        found.append(PolicyNameInvalid(name=name))
    parts = []
    for build, raw in ((Schedule.from_dict, schedule), (Retention.from_dict, retention)):
        try:
            part = build(raw)
            part.validate()
            parts.append(part)
        except HavenError as e:
            found.append(e)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            found.append(PolicyBodyInvalid(reason=str(e) or type(e).__name__))
    if len(parts) == 2:
        try:
            parts[1].validate_against(parts[0])
        except HavenError as e:
            found.append(e)
    return found


def parse_policy(schedule: dict, retention: dict) -> tuple[Schedule, Retention]:
    """Build and validate the domain objects; domain errors carry their own code and fix."""
    try:
        sched = Schedule.from_dict(schedule)
        ret = Retention.from_dict(retention)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise PolicyBodyInvalid(reason=str(e) or type(e).__name__) from None
    sched.validate()
    ret.validate()
    ret.validate_against(sched)
    return sched, ret


class PolicyService:
    def __init__(self, core):
        self.core = core

    def add_default(self, s, vault: Vault) -> Policy:
        policy = Policy(
            vault_id=vault.id, name=DEFAULT_POLICY_NAME, name_key=DEFAULT_POLICY_NAME.lower(),
            schedule=DEFAULT_POLICY_SCHEDULE.to_dict(), retention=DEFAULT_POLICY_RETENTION.to_dict(),
            created_at=self.core.clock.now(),
        )
        s.add(policy)
        return policy

    def find(self, s, vault: Vault, name: str) -> Policy:
        policy = s.scalar(select(Policy).where(Policy.vault_id == vault.id, Policy.name_key == name.lower()))
        if policy is None:
            raise PolicyNotFound(name=name, vault=vault.name)
        return policy

    def create(self, caller: Caller, subscription: str, vault_name: str, name: str, schedule: dict, retention: dict) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
                raise PolicyNameInvalid(name=name)
            sched, ret = parse_policy(schedule, retention)
            if s.scalar(select(Policy.id).where(Policy.vault_id == vault.id, Policy.name_key == name.lower())):
                raise PolicyAlreadyExists(name=name, vault=vault.name)
            policy = Policy(vault_id=vault.id, name=name, name_key=name.lower(), schedule=sched.to_dict(),
                            retention=ret.to_dict(), created_at=self.core.clock.now())
            s.add(policy)
            s.flush()
            return self.view(s, policy)

    def update(self, caller: Caller, subscription: str, vault_name: str, name: str, schedule: dict | None, retention: dict | None,
               approval_id: str | None = None) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            policy = self.find(s, vault, name)
            sched, ret = parse_policy(schedule or policy.schedule, retention or policy.retention)
            self.core.protection.check_retention_change(s, vault, policy, ret)
            self.core.guard.check_policy_update(s, caller, vault, policy, sched.to_dict(), ret.to_dict(), approval_id)
            policy.schedule, policy.retention = sched.to_dict(), ret.to_dict()
            return self.view(s, policy)

    def show(self, caller: Caller, subscription: str, vault_name: str, name: str) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            return self.view(s, self.find(s, vault, name))

    def list(self, caller: Caller, subscription: str, vault_name: str) -> list[dict]:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            return [self.view(s, p) for p in s.scalars(select(Policy).where(Policy.vault_id == vault.id).order_by(Policy.name))]

    def delete(self, caller: Caller, subscription: str, vault_name: str, name: str) -> None:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            policy = self.find(s, vault, name)
            count = len(self._items(s, policy))
            if count:
                raise PolicyInUse(name=policy.name, count=count)
            s.delete(policy)

    def default_for_vm(self, caller: Caller, subscription: str, vault_name: str) -> dict:
        return self.show(caller, subscription, vault_name, DEFAULT_POLICY_NAME)

    def associated_items(self, caller: Caller, subscription: str, vault_name: str, name: str) -> list[dict]:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            policy = self.find(s, vault, name)
            return [{"item_id": i.id, "vm": vm.name, "state": i.state} for i, vm in self._items(s, policy)]

    def _items(self, s, policy: Policy):
        return s.execute(
            select(ProtectedItem, VirtualMachine)
            .join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)
            .where(ProtectedItem.policy_id == policy.id, ProtectedItem.state == ProtectionState.PROTECTED.value)
        ).all()

    def view(self, s, policy: Policy) -> dict:
        sched = Schedule.from_dict(policy.schedule)
        return {
            "id": policy.id,
            "name": policy.name,
            "vault_id": policy.vault_id,
            "schedule": policy.schedule,
            "retention": policy.retention,
            "next_run": sched.next_slot(self.core.clock.now()),
            "protected_items": len(self._items(s, policy)),
            "created_at": policy.created_at,
        }

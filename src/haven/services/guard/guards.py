"""Resource guards themselves: create, list, show, delete, their approvers, and putting a vault under one."""

from __future__ import annotations

from sqlalchemy import select

from haven.db.guard_tables import GuardApprover, ResourceGuard, VaultGuard
from haven.domain.enums import Role
from haven.services.auth import Caller
from haven.services.guard.base import GuardBase
from haven.services.guard.errors import (
    ApprovalWindowInvalid, ResourceGuardAlreadyExists, ResourceGuardInUse, ResourceGuardNameInvalid,
)
from haven.services.guard.rules import DEFAULT_APPROVAL_WINDOW_MINUTES, GUARD_NAME, MAX_WINDOW, MIN_WINDOW, Operation

__all__ = ["GuardManagement"]


class GuardManagement(GuardBase):
    # ---- guards ----
    def create(self, caller: Caller, subscription: str, name: str, approval_window_minutes: int | None = None) -> dict:
        window = DEFAULT_APPROVAL_WINDOW_MINUTES if approval_window_minutes is None else approval_window_minutes
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.OWNER)
            if not isinstance(name, str) or not GUARD_NAME.fullmatch(name):
                raise ResourceGuardNameInvalid(name=name)
            if not isinstance(window, int) or not MIN_WINDOW <= window <= MAX_WINDOW:
                raise ApprovalWindowInvalid(value=window, minimum=MIN_WINDOW, maximum=MAX_WINDOW)
            if s.scalar(select(ResourceGuard.id).where(ResourceGuard.subscription_id == sub.id, ResourceGuard.name_key == name.lower())):
                raise ResourceGuardAlreadyExists(name=name, subscription=subscription)
            guard = ResourceGuard(subscription_id=sub.id, name=name, name_key=name.lower(), approval_window_minutes=window,
                                  created_at=self.core.clock.now())
            s.add(guard)
            s.flush()
            self._audit(s, "GuardCreated", caller, guard, detail=f"approval window {window} minutes")
            return self._view_guard(s, guard)

    def list(self, caller: Caller, subscription: str) -> list[dict]:
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription)
            guards = s.scalars(select(ResourceGuard).where(ResourceGuard.subscription_id == sub.id).order_by(ResourceGuard.name))
            return [self._view_guard(s, g) for g in guards]

    def show(self, caller: Caller, subscription: str, name: str) -> dict:
        with self.core.db.session() as s:
            return self._view_guard(s, self._find(s, caller, subscription, name))

    def delete(self, caller: Caller, subscription: str, name: str) -> None:
        with self.core.db.session() as s:
            guard = self._find(s, caller, subscription, name, Role.OWNER)
            count = len(s.scalars(select(VaultGuard.vault_id).where(VaultGuard.guard_id == guard.id)).all())
            if count:
                raise ResourceGuardInUse(name=guard.name, count=count)
            self._audit(s, "GuardDeleted", caller, guard)
            s.delete(guard)

    def add_approver(self, caller: Caller, subscription: str, name: str, principal: str) -> dict:
        with self.core.db.session() as s:
            guard = self._find(s, caller, subscription, name, Role.OWNER)
            p = self._principal(s, principal)
            if not self._is_approver(s, guard.id, p.id):
                s.add(GuardApprover(guard_id=guard.id, principal_id=p.id, created_at=self.core.clock.now()))
                self._audit(s, "ApproverAdded", caller, guard, detail=p.name)
            s.flush()
            return self._view_guard(s, guard)

    def remove_approver(self, caller: Caller, subscription: str, name: str, principal: str) -> dict:
        with self.core.db.session() as s:
            guard = self._find(s, caller, subscription, name, Role.OWNER)
            p = self._principal(s, principal)
            row = s.scalar(select(GuardApprover).where(GuardApprover.guard_id == guard.id, GuardApprover.principal_id == p.id))
            if row is not None:
                s.delete(row)
                self._audit(s, "ApproverRemoved", caller, guard, detail=p.name)
            s.flush()
            return self._view_guard(s, guard)

    # ---- a vault's guard ----
    def show_vault_guard(self, caller: Caller, subscription: str, vault_name: str) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            return self._view_link(s, vault)

    def set_vault_guard(self, caller: Caller, subscription: str, vault_name: str, guard: str,
                        guard_subscription: str | None = None, approval_id: str | None = None) -> dict:
        """Put the vault under a guard; the caller must be able to read the guard (Reader on its subscription).
        Replacing a vault's guard removes the old one, which its approvers must approve."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            target = self._find(s, caller, guard_subscription or subscription, guard)
            link = s.get(VaultGuard, vault.id)
            if link is not None and link.guard_id == target.id:
                return self._view_link(s, vault)
            if link is not None:
                self.authorize(s, caller, vault, [Operation.REMOVE_GUARD], {"new_guard": target.id}, approval_id)
                s.delete(link)
                s.flush()
            s.add(VaultGuard(vault_id=vault.id, guard_id=target.id, created_at=self.core.clock.now()))
            self._audit(s, "VaultGuarded", caller, target, vault=vault)
            s.flush()
            return self._view_link(s, vault)

    def remove_vault_guard(self, caller: Caller, subscription: str, vault_name: str, approval_id: str | None = None) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            link = s.get(VaultGuard, vault.id)
            if link is None:
                return self._view_link(s, vault)
            self.authorize(s, caller, vault, [Operation.REMOVE_GUARD], {"new_guard": None}, approval_id)
            self._audit(s, "GuardRemoved", caller, s.get(ResourceGuard, link.guard_id), vault=vault)
            s.delete(link)
            s.flush()
            return self._view_link(s, vault)

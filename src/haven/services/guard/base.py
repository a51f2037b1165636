"""What the guard service's parts share: lookups, visibility, views and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from haven.db.guard_tables import GuardApprover, GuardAuditEvent, GuardRequest, ResourceGuard, VaultGuard
from haven.db.models import Principal, Vault
from haven.domain.enums import PrincipalKind, Role
from haven.services.auth import Caller
from haven.services.guard.errors import GuardPrincipalNotFound, ResourceGuardNotFound
from haven.services.guard.rules import GUARD_APPROVER_ROLE, Operation, RequestStatus

__all__ = ["GuardBase"]


class GuardBase:
    def __init__(self, core: Any):
        self.core = core

    def guard_of(self, s, vault_id: str) -> str | None:
        link = s.get(VaultGuard, vault_id)
        return link.guard_id if link else None

    # ---- helpers ----
    def _find(self, s, caller: Caller, subscription: str, name: str, needed: Role = Role.READER) -> ResourceGuard:
        sub = self.core.subscriptions.get_visible(s, caller, subscription, needed)
        guard = s.scalar(select(ResourceGuard).where(ResourceGuard.subscription_id == sub.id,
                                                     or_(ResourceGuard.name_key == str(name).lower(), ResourceGuard.id == name)))
        if guard is None:
            raise ResourceGuardNotFound(name=name, subscription=subscription)
        return guard

    @staticmethod
    def _principal(s, name: str) -> Principal:
        p = s.scalar(select(Principal).where(Principal.name == name))
        if p is None or p.kind != PrincipalKind.USER.value:
            raise GuardPrincipalNotFound(name=name)
        return p

    @staticmethod
    def _is_approver(s, guard_id: str, principal_id: str) -> bool:
        return s.scalar(select(GuardApprover.id).where(GuardApprover.guard_id == guard_id,
                                                       GuardApprover.principal_id == principal_id)) is not None

    def _can_see(self, s, caller: Caller, guard: ResourceGuard | None, vault_subscription_id: str | None) -> bool:
        if vault_subscription_id and caller.can(vault_subscription_id, Role.READER):
            return True
        if guard is None:
            return False
        return caller.can(guard.subscription_id, Role.READER) or self._is_approver(s, guard.id, caller.principal_id)

    def _can_see_request(self, s, caller: Caller, req: GuardRequest) -> bool:
        return self._can_see(s, caller, s.get(ResourceGuard, req.guard_id), req.subscription_id)

    @staticmethod
    def _status(req: GuardRequest, now: datetime) -> str:
        if req.status in (RequestStatus.PENDING.value, RequestStatus.APPROVED.value) and req.expires_at <= now:
            return RequestStatus.EXPIRED.value
        return req.status

    def _view_request(self, s, req: GuardRequest, now: datetime) -> dict:
        guard = s.get(ResourceGuard, req.guard_id)
        return {"id": req.id, "guard_id": req.guard_id, "guard": guard.name if guard else None, "vault_id": req.vault_id,
                "vault": req.vault_name, "subscription_id": req.subscription_id, "operation": req.operation,
                "parameters": req.parameters, "parameters_digest": req.digest, "requester": req.requester,
                "status": self._status(req, now), "created_at": req.created_at, "expires_at": req.expires_at,
                "decided_by": req.decided_by, "decided_at": req.decided_at, "comment": req.comment, "used_at": req.used_at}

    def _view_guard(self, s, guard: ResourceGuard) -> dict:
        approvers = s.scalars(select(Principal.name).join(GuardApprover, GuardApprover.principal_id == Principal.id)
                              .where(GuardApprover.guard_id == guard.id).order_by(Principal.name)).all()
        vaults = len(s.scalars(select(VaultGuard.vault_id).where(VaultGuard.guard_id == guard.id)).all())
        return {"id": guard.id, "name": guard.name, "subscription_id": guard.subscription_id,
                "approval_window_minutes": guard.approval_window_minutes, "approver_role": GUARD_APPROVER_ROLE,
                "approvers": list(approvers), "protected_vaults": vaults,
                "protected_operations": [op.value for op in Operation], "created_at": guard.created_at}

    def _view_link(self, s, vault: Vault) -> dict:
        link = s.get(VaultGuard, vault.id)
        guard = s.get(ResourceGuard, link.guard_id) if link else None
        return {"vault": vault.name, "vault_id": vault.id, "guarded": guard is not None,
                "guard_id": guard.id if guard else None, "guard": guard.name if guard else None,
                "guard_subscription_id": guard.subscription_id if guard else None,
                "since": link.created_at if link else None,
                "protected_operations": [op.value for op in Operation] if guard else []}

    def _audit(self, s, event: str, caller: Caller, guard: ResourceGuard | None, vault: Vault | None = None,
               detail: str | None = None) -> None:
        s.add(GuardAuditEvent(time=self.core.clock.now(), event=event, principal=caller.name, guard_id=guard.id if guard else None,
                              vault_id=vault.id if vault else None, vault_name=vault.name if vault else None,
                              subscription_id=vault.subscription_id if vault else None, detail=detail))

    def _audit_apart(self, **fields) -> None:
        """An audit event that outlives the caller's transaction (which the refusal rolls back)."""
        with self.core.db.session() as s2:
            s2.add(GuardAuditEvent(time=self.core.clock.now(), **fields))

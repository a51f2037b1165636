"""The decision: one hook per protected place (``check_*``), each called before anything changes, and
:meth:`Authorization.authorize`, which lets a call through on an unguarded vault or with a valid approval
(used up in the caller's transaction) and otherwise audits, makes an approval request and refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from haven.db.guard_tables import GuardAuditEvent, GuardRequest, ResourceGuard, VaultGuard
from haven.db.models import RecoveryPoint, Vault
from haven.domain.vault import Immutability
from haven.services.auth import Caller
from haven.services.guard.base import GuardBase
from haven.services.guard.errors import (
    ApprovalAlreadyUsed, ApprovalExpired, ApprovalMismatch, ApprovalNotApproved, ApprovalNotFound,
    MultiUserAuthorizationRequired,
)
from haven.services.guard.rules import Operation, RequestStatus, canonical, request_digest, retention_shortened

__all__ = ["Authorization"]


class Authorization(GuardBase):
    # ---- the hooks: one per protected place, each called before anything changes ----
    def check_properties(self, s, caller: Caller, vault: Vault, redundancy: str | None, soft_delete_days: int | None,
                         immutability: str | None, approval_id: str | None) -> None:
        ops = []
        if immutability is not None and Immutability(vault.immutability).protects and immutability == Immutability.DISABLED.value:
            ops.append(Operation.DISABLE_IMMUTABILITY)
        if soft_delete_days is not None and soft_delete_days < vault.soft_delete_days:
            ops.append(Operation.REDUCE_SOFT_DELETE)
        if ops:
            self.authorize(s, caller, vault, ops, {"storage_redundancy": redundancy, "soft_delete_days": soft_delete_days,
                                                   "immutability": immutability}, approval_id)

    def check_policy_update(self, s, caller: Caller, vault: Vault, policy, schedule: dict, retention: dict,
                            approval_id: str | None) -> None:
        if retention_shortened(policy.retention, retention):
            self.authorize(s, caller, vault, [Operation.REDUCE_POLICY_RETENTION],
                           {"policy": policy.name, "schedule": schedule, "retention": retention}, approval_id)

    def check_item_policy(self, s, caller: Caller, vault: Vault, item, new_policy, approval_id: str | None) -> None:
        """Moving a protected item to a policy that keeps its points for less time."""
        from haven.db.models import Policy
        from haven.domain.enums import ProtectionState

        if item.state != ProtectionState.PROTECTED.value or not item.policy_id or item.policy_id == new_policy.id:
            return
        old = s.get(Policy, item.policy_id)
        if old is not None and retention_shortened(old.retention, new_policy.retention):
            self.authorize(s, caller, vault, [Operation.MODIFY_PROTECTION_REDUCED_RETENTION],
                           {"vm": item.vm.name, "policy": new_policy.name}, approval_id)

    def check_resume(self, s, caller: Caller, vault: Vault, item, new_policy, approval_id: str | None) -> None:
        """Resuming a stopped item that still has points: they were kept forever, the policy's retention now expires them."""
        from haven.domain.enums import ProtectionState

        if item is None or item.vault_id != vault.id or item.state != ProtectionState.PROTECTION_STOPPED.value:
            return
        if s.scalar(select(RecoveryPoint.id).where(RecoveryPoint.item_id == item.id).limit(1)) is not None:
            self.authorize(s, caller, vault, [Operation.MODIFY_PROTECTION_REDUCED_RETENTION],
                           {"vm": item.vm.name, "policy": new_policy.name, "resume": True}, approval_id)

    def check_stop_protection(self, s, caller: Caller, vault: Vault, item, delete_backup_data: bool, approval_id: str | None) -> None:
        if delete_backup_data:
            self.authorize(s, caller, vault, [Operation.STOP_PROTECTION_DELETE_DATA],
                           {"vm": item.vm.name, "delete_backup_data": True}, approval_id)

    # ---- the decision ----
    def authorize(self, s, caller: Caller, vault: Vault, operations: list[Operation], parameters: dict,
                  approval_id: str | None) -> None:
        """Let the call through on an unguarded vault, or with a valid approval (used up, in ``s``'s transaction);
        otherwise audit, make (or reuse) an approval request and raise."""
        link = s.get(VaultGuard, vault.id)
        if link is None:
            return
        guard = s.get(ResourceGuard, link.guard_id)
        operation = ",".join(op.value for op in operations)
        parameters = canonical(parameters)
        digest = request_digest(operation, vault.id, caller.principal_id, parameters)
        now = self.core.clock.now()
        base = {"guard_id": guard.id, "vault_id": vault.id, "vault_name": vault.name,
                "subscription_id": vault.subscription_id, "operation": operation}
        if not approval_id:
            request_id, expires = self._request(caller, guard, vault, operation, parameters, digest, now)
            raise MultiUserAuthorizationRequired(vault=vault.name, guard=guard.name, operation=operation,
                                                 request_id=request_id, expires_at=expires.isoformat())
        req = s.get(GuardRequest, approval_id) if isinstance(approval_id, str) and len(approval_id) <= 64 else None
        error = self._approval_error(req, approval_id, vault, guard, operation, digest, caller, now)
        if error is not None:
            self._audit_apart(event="Refused", principal=caller.name, request_id=req.id if req else None, code=error.code,
                              detail=error.text, **base)
            raise error
        used = s.execute(update(GuardRequest).where(GuardRequest.id == req.id, GuardRequest.status == RequestStatus.APPROVED.value)
                         .values(status=RequestStatus.USED.value, used_at=now))
        if used.rowcount != 1:  # another call used it first
            raise ApprovalAlreadyUsed(request_id=req.id, used_at=now.isoformat())
        s.add(GuardAuditEvent(time=now, event="Used", principal=caller.name, request_id=req.id,
                              detail=f"approved by {req.decided_by}", **base))

    def _approval_error(self, req, approval_id, vault, guard, operation, digest, caller, now):
        if req is None or req.vault_id != vault.id:
            return ApprovalNotFound(request_id=approval_id, vault=vault.name)
        if req.operation != operation:
            return ApprovalMismatch(request_id=req.id, what=f"operation ({req.operation})")
        if req.requester_id != caller.principal_id:
            return ApprovalMismatch(request_id=req.id, what="requester")
        if req.digest != digest:
            return ApprovalMismatch(request_id=req.id, what="set of parameters")
        if req.guard_id != guard.id:
            return ApprovalMismatch(request_id=req.id, what="resource guard")
        if req.status == RequestStatus.USED.value:
            return ApprovalAlreadyUsed(request_id=req.id, used_at=req.used_at.isoformat() if req.used_at else "?")
        if req.expires_at <= now:
            return ApprovalExpired(request_id=req.id, expires_at=req.expires_at.isoformat())
        if req.status != RequestStatus.APPROVED.value:
            return ApprovalNotApproved(request_id=req.id, status=req.status)
        return None

    def _request(self, caller: Caller, guard: ResourceGuard, vault: Vault, operation: str, parameters: dict,
                 digest: str, now: datetime) -> tuple[str, datetime]:
        """A pending (or still usable) request for exactly this call, made in a transaction of its own: the
        caller's transaction is rolled back by the error that follows."""
        with self.core.db.session() as s2:
            req = s2.scalar(select(GuardRequest).where(
                GuardRequest.vault_id == vault.id, GuardRequest.digest == digest, GuardRequest.guard_id == guard.id,
                GuardRequest.status.in_([RequestStatus.PENDING.value, RequestStatus.APPROVED.value]),
                GuardRequest.expires_at > now).order_by(GuardRequest.created_at.desc()).limit(1))
            if req is None:
                req = GuardRequest(guard_id=guard.id, vault_id=vault.id, vault_name=vault.name, subscription_id=vault.subscription_id,
                                   operation=operation, parameters=parameters, digest=digest, requester_id=caller.principal_id,
                                   requester=caller.name, status=RequestStatus.PENDING.value, created_at=now,
                                   expires_at=now + timedelta(minutes=guard.approval_window_minutes))
                s2.add(req)
                s2.flush()
            s2.add(GuardAuditEvent(time=now, event="Requested", principal=caller.name, guard_id=guard.id, vault_id=vault.id,
                                   vault_name=vault.name, subscription_id=vault.subscription_id, request_id=req.id,
                                   operation=operation, code=MultiUserAuthorizationRequired.code,
                                   detail=f"refused without approval; request {req.status.lower()}"))
            return req.id, req.expires_at

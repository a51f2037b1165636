"""Multi-user authorization (Azure Backup's Resource Guard): destructive operations on a guarded vault
need the approval of a second principal.

A resource guard is an object of a subscription, meant to be one the security administrators own
and the backup administrators do not (as in Azure, where the guard sits in another subscription or
tenant). Its Owner names the principals that hold the ``Guard Approver`` role on it. A vault put under
a guard answers every protected operation (``Operation``) without an approval with
``MultiUserAuthorizationRequired`` and an approval request bound to the operation, the vault, the
requester and a digest of the exact parameters. A different principal holding the guard's approver
role approves it within the guard's window; the requester repeats the call with the request's id and
it runs once. Every step is audited, refusals included.

The services call one hook each (``check_*``) before they change anything; ``authorize`` decides.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update

from haven.db.guard_tables import GuardApprover, GuardAuditEvent, GuardRequest, ResourceGuard, VaultGuard
from haven.db.models import Principal, RecoveryPoint, Subscription, Vault
from haven.domain.enums import PrincipalKind, Role
from haven.domain.vault import Immutability, retention_reduced
from haven.errors import Conflict, Forbidden, NotFound, UserError
from haven.services.auth import Caller

__all__ = [
    "GuardService",
    "Operation",
    "GUARD_APPROVER_ROLE",
    "DEFAULT_APPROVAL_WINDOW_MINUTES",
    "retention_shortened",
    "MultiUserAuthorizationRequired",
    "ApprovalNotFound",
    "ApprovalMismatch",
    "ApprovalNotApproved",
    "ApprovalAlreadyUsed",
    "ApprovalExpired",
    "SelfApprovalRefused",
    "GuardApproverRequired",
    "ResourceGuardNotFound",
    "ResourceGuardAlreadyExists",
    "ResourceGuardInUse",
    "ResourceGuardNameInvalid",
    "ApprovalWindowInvalid",
    "GuardPrincipalNotFound",
    "RequestNotFound",
    "RequestNotPending",
]

GUARD_APPROVER_ROLE = "Guard Approver"
DEFAULT_APPROVAL_WINDOW_MINUTES = 240  # like a just-in-time role activation: 4 hours
MIN_WINDOW, MAX_WINDOW = 5, 24 * 60
_GUARD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,49}$")


class Operation(StrEnum):
    """The operations a resource guard protects (Azure's names where Haven has the same operation)."""

    REDUCE_SOFT_DELETE = "ReduceSoftDeletePeriod"  # Haven's soft delete cannot be switched off, only shortened
    DISABLE_IMMUTABILITY = "DisableImmutability"
    REDUCE_POLICY_RETENTION = "ModifyPolicyReducedRetention"
    MODIFY_PROTECTION_REDUCED_RETENTION = "ModifyProtectionReducedRetention"
    STOP_PROTECTION_DELETE_DATA = "StopProtectionWithDeleteData"
    REMOVE_GUARD = "RemoveResourceGuard"


class RequestStatus(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    USED = "Used"
    EXPIRED = "Expired"  # shown, never stored: a Pending or Approved request past its expiry


# ---- errors ----
class MultiUserAuthorizationRequired(Forbidden):
    code = "UserErrorMultiUserAuthorizationRequired"
    message = ("Vault {vault!r} is protected by resource guard {guard!r}: {operation} needs the approval of another "
               "principal holding the Guard Approver role on that guard. Approval request {request_id} was made; it "
               "must be approved before {expires_at}. Nothing was changed.")
    recommendation = ("Ask an approver of resource guard {guard!r} to run 'haven resource-guard approve --request {request_id}', "
                      "then repeat the same command with --approval {request_id} (API: \"approval_id\").")


class ApprovalNotFound(Forbidden):
    code = "UserErrorResourceGuardApprovalNotFound"
    message = "Approval {request_id!r} does not exist for vault {vault!r}. Nothing was changed."
    recommendation = "Repeat the command without --approval to make an approval request, and have it approved."


class ApprovalMismatch(Forbidden):
    code = "UserErrorResourceGuardApprovalMismatch"
    message = "Approval {request_id!r} was given for another {what}; it cannot authorize this call. Nothing was changed."
    recommendation = "Repeat the command without --approval to make an approval request for exactly this operation, and have it approved."


class ApprovalNotApproved(Forbidden):
    code = "UserErrorResourceGuardApprovalNotApproved"
    message = "Approval request {request_id!r} is {status}, not approved. Nothing was changed."
    recommendation = "Ask an approver of the vault's resource guard to run 'haven resource-guard approve --request {request_id}'."


class ApprovalAlreadyUsed(Forbidden):
    code = "UserErrorResourceGuardApprovalAlreadyUsed"
    message = "Approval {request_id!r} was already used at {used_at}; an approval authorizes one call. Nothing was changed."
    recommendation = "Repeat the command without --approval to make a new approval request."


class ApprovalExpired(Forbidden):
    code = "UserErrorResourceGuardApprovalExpired"
    message = "Approval request {request_id!r} expired at {expires_at}. Nothing was changed."
    recommendation = "Repeat the command without --approval to make a new approval request, and have it approved within the guard's window."


class SelfApprovalRefused(Forbidden):
    code = "UserErrorResourceGuardSelfApproval"
    message = "Principal {principal!r} made approval request {request_id!r} and cannot approve it: a second principal must."
    recommendation = "Ask another principal holding the Guard Approver role on resource guard {guard!r} to approve it."


class GuardApproverRequired(Forbidden):
    code = "UserErrorResourceGuardApproverRequired"
    message = "Principal {principal!r} does not hold the Guard Approver role on resource guard {guard!r}."
    recommendation = ("Ask an Owner of the guard's subscription to assign it: haven resource-guard approver add "
                      "-s {subscription} --name {guard} --principal {principal}.")


class ResourceGuardNotFound(NotFound):
    code = "UserErrorResourceGuardNotFound"
    message = "Resource guard {name!r} does not exist in subscription {subscription!r}."
    recommendation = "List the guards with 'haven resource-guard list -s {subscription}'."


class ResourceGuardAlreadyExists(Conflict):
    code = "UserErrorResourceGuardAlreadyExists"
    message = "A resource guard named {name!r} already exists in subscription {subscription!r}."
    recommendation = "Choose another name, or use the existing guard."


class ResourceGuardInUse(Conflict):
    code = "UserErrorResourceGuardInUse"
    message = "Resource guard {name!r} protects {count} vault(s) and cannot be deleted."
    recommendation = "Remove the guard from each vault first (haven vault resource-guard remove, which needs an approval)."


class ResourceGuardNameInvalid(UserError):
    code = "UserErrorResourceGuardNameInvalid"
    message = "The resource guard name {name!r} is invalid: 2 to 50 letters, digits, hyphens or underscores, starting with a letter."
    recommendation = "Choose a name such as 'security-guard'."


class ApprovalWindowInvalid(UserError):
    code = "UserErrorResourceGuardApprovalWindowInvalid"
    message = "The approval window must be {minimum} to {maximum} minutes; {value} was given."
    recommendation = "Pass --approval-window-minutes between {minimum} and {maximum} (the default is 240, 4 hours)."


class GuardPrincipalNotFound(NotFound):
    code = "UserErrorResourceGuardPrincipalNotFound"
    message = "Principal {name!r} does not exist, or is not a user principal."
    recommendation = "Name a principal made with 'haven token create' (host agents and built-in principals cannot approve)."


class RequestNotFound(NotFound):
    code = "UserErrorResourceGuardRequestNotFound"
    message = "Approval request {request_id!r} does not exist or you cannot see it."
    recommendation = "List the requests you can see with 'haven resource-guard requests list'."


class RequestNotPending(Conflict):
    code = "UserErrorResourceGuardRequestNotPending"
    message = "Approval request {request_id!r} is {status}; only a pending request can be approved or rejected."
    recommendation = "The requester makes a new request by repeating the operation without --approval."


def retention_shortened(old: dict, new: dict) -> list[str]:
    """What ``new`` keeps for less time than ``old``: shorter or dropped tiers, and weekly days no longer kept."""
    reduced = retention_reduced(old or {}, new or {})
    if (old or {}).get("weekly_weeks") is not None and (new or {}).get("weekly_weeks") is not None:
        if set((old or {}).get("weekly_days") or [6]) - set((new or {}).get("weekly_days") or [6]):
            reduced.append("weekly_days")
    return reduced


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _digest(operation: str, vault_id: str, requester_id: str, parameters: dict) -> str:
    body = json.dumps({"operation": operation, "vault": vault_id, "requester": requester_id, "parameters": parameters},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class GuardService:
    def __init__(self, core):
        self.core = core

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
        parameters = _canonical(parameters)
        digest = _digest(operation, vault.id, caller.principal_id, parameters)
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

    # ---- approving ----
    def approve(self, caller: Caller, request_id: str, comment: str | None = None) -> dict:
        return self._decide(caller, request_id, True, comment)

    def reject(self, caller: Caller, request_id: str, comment: str | None = None) -> dict:
        return self._decide(caller, request_id, False, comment)

    def _decide(self, caller: Caller, request_id: str, approve: bool, comment: str | None) -> dict:
        now = self.core.clock.now()
        event = "Approved" if approve else "Rejected"
        with self.core.db.session() as s:
            req = s.get(GuardRequest, request_id)
            if req is None or not self._can_see_request(s, caller, req):
                raise RequestNotFound(request_id=request_id)
            guard = s.get(ResourceGuard, req.guard_id)
            base = {"guard_id": req.guard_id, "vault_id": req.vault_id, "vault_name": req.vault_name,
                    "subscription_id": req.subscription_id, "request_id": req.id, "operation": req.operation}
            error = None
            if guard is None or not self._is_approver(s, guard.id, caller.principal_id):
                sub = s.get(Subscription, guard.subscription_id) if guard else None
                error = GuardApproverRequired(principal=caller.name, guard=guard.name if guard else req.guard_id,
                                              subscription=sub.name if sub else "?")
            elif caller.principal_id == req.requester_id:
                error = SelfApprovalRefused(principal=caller.name, request_id=req.id, guard=guard.name)
            elif self._status(req, now) != RequestStatus.PENDING.value:
                error = RequestNotPending(request_id=req.id, status=self._status(req, now))
            if error is not None:
                self._audit_apart(event="ApprovalRefused" if approve else "RejectionRefused", principal=caller.name,
                                  code=error.code, detail=error.text, **base)
                raise error
            req.status = (RequestStatus.APPROVED if approve else RequestStatus.REJECTED).value
            req.decided_by, req.decided_at, req.comment = caller.name, now, comment
            if approve:  # just in time: usable for one window from the approval
                req.expires_at = now + timedelta(minutes=guard.approval_window_minutes)
            s.add(GuardAuditEvent(time=now, event=event, principal=caller.name, detail=comment, **base))
            return self._view_request(s, req, now)

    # ---- listing ----
    def list_requests(self, caller: Caller, guard: str | None = None, vault: str | None = None, status: str | None = None) -> list[dict]:
        now = self.core.clock.now()
        with self.core.db.session() as s:
            q = select(GuardRequest).order_by(GuardRequest.created_at.desc())
            if guard:
                q = q.where(GuardRequest.guard_id == guard)
            if vault:
                q = q.where(or_(GuardRequest.vault_id == vault, GuardRequest.vault_name == vault))
            out = [self._view_request(s, r, now) for r in s.scalars(q) if self._can_see_request(s, caller, r)]
            return [r for r in out if status is None or r["status"] == status]

    def show_request(self, caller: Caller, request_id: str) -> dict:
        with self.core.db.session() as s:
            req = s.get(GuardRequest, request_id)
            if req is None or not self._can_see_request(s, caller, req):
                raise RequestNotFound(request_id=request_id)
            return self._view_request(s, req, self.core.clock.now())

    def list_audit(self, caller: Caller, guard: str | None = None, vault: str | None = None) -> list[dict]:
        with self.core.db.session() as s:
            q = select(GuardAuditEvent).order_by(GuardAuditEvent.id)
            if guard:
                q = q.where(GuardAuditEvent.guard_id == guard)
            if vault:
                q = q.where(or_(GuardAuditEvent.vault_id == vault, GuardAuditEvent.vault_name == vault))
            guards: dict[str, ResourceGuard | None] = {}
            out = []
            for e in s.scalars(q):
                if e.guard_id not in guards:
                    guards[e.guard_id] = s.get(ResourceGuard, e.guard_id) if e.guard_id else None
                if self._can_see(s, caller, guards[e.guard_id], e.subscription_id):
                    out.append({"id": e.id, "time": e.time, "event": e.event, "principal": e.principal, "guard_id": e.guard_id,
                                "vault_id": e.vault_id, "vault": e.vault_name, "request_id": e.request_id,
                                "operation": e.operation, "code": e.code, "detail": e.detail})
            return out

    # ---- guards ----
    def create(self, caller: Caller, subscription: str, name: str, approval_window_minutes: int | None = None) -> dict:
        window = DEFAULT_APPROVAL_WINDOW_MINUTES if approval_window_minutes is None else approval_window_minutes
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.OWNER)
            if not isinstance(name, str) or not _GUARD_NAME.fullmatch(name):
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

"""Approving and rejecting requests (a different principal with the guard's approver role), and reading
requests and the audit trail."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select

from haven.db.guard_tables import GuardAuditEvent, GuardRequest, ResourceGuard
from haven.db.models import Subscription
from haven.services.auth import Caller
from haven.services.guard.base import GuardBase
from haven.services.guard.errors import GuardApproverRequired, RequestNotFound, RequestNotPending, SelfApprovalRefused
from haven.services.guard.rules import RequestStatus

__all__ = ["Approvals"]


class Approvals(GuardBase):
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

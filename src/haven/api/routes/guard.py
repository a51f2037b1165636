"""Resource guards (multi-user authorization): the guards, a vault's guard, approval requests and their audit."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from haven.api.deps import caller, core
from haven.api.routes.params import Id, Sub, VaultName
from haven.api.schemas import (
    GuardAuditOut, GuardDecisionIn, GuardRequestOut, ResourceGuardIn, ResourceGuardOut, VaultGuardIn, VaultGuardOut,
)

router = APIRouter()
GUARDS = "/subscriptions/{subscription}/resource-guards"
GuardName = Annotated[str, Path(min_length=1, max_length=64, description="Resource guard name or id", examples=["security-guard"])]
PrincipalName = Annotated[str, Path(min_length=1, max_length=128, description="Principal name")]
Filter = Annotated[str | None, Query(min_length=1, max_length=64)]
TAG = ["resource guards"]


@router.post(GUARDS, response_model=ResourceGuardOut, status_code=status.HTTP_201_CREATED, tags=TAG)
def create_guard(subscription: Sub, body: ResourceGuardIn, app=Depends(core), who=Depends(caller)):
    return app.guard.create(who, subscription, body.name, body.approval_window_minutes)


@router.get(GUARDS, response_model=list[ResourceGuardOut], tags=TAG)
def list_guards(subscription: Sub, app=Depends(core), who=Depends(caller)):
    return app.guard.list(who, subscription)


@router.get(GUARDS + "/{guard}", response_model=ResourceGuardOut, tags=TAG)
def show_guard(subscription: Sub, guard: GuardName, app=Depends(core), who=Depends(caller)):
    return app.guard.show(who, subscription, guard)


@router.delete(GUARDS + "/{guard}", status_code=status.HTTP_204_NO_CONTENT, tags=TAG)
def delete_guard(subscription: Sub, guard: GuardName, app=Depends(core), who=Depends(caller)):
    app.guard.delete(who, subscription, guard)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(GUARDS + "/{guard}/approvers/{principal}", response_model=ResourceGuardOut, tags=TAG)
def add_approver(subscription: Sub, guard: GuardName, principal: PrincipalName, app=Depends(core), who=Depends(caller)):
    return app.guard.add_approver(who, subscription, guard, principal)


@router.delete(GUARDS + "/{guard}/approvers/{principal}", response_model=ResourceGuardOut, tags=TAG)
def remove_approver(subscription: Sub, guard: GuardName, principal: PrincipalName, app=Depends(core), who=Depends(caller)):
    return app.guard.remove_approver(who, subscription, guard, principal)


VAULT_GUARD = "/subscriptions/{subscription}/vaults/{vault}/resource-guard"


@router.get(VAULT_GUARD, response_model=VaultGuardOut, tags=TAG)
def show_vault_guard(subscription: Sub, vault: VaultName, app=Depends(core), who=Depends(caller)):
    return app.guard.show_vault_guard(who, subscription, vault)


@router.put(VAULT_GUARD, response_model=VaultGuardOut, tags=TAG)
def set_vault_guard(subscription: Sub, vault: VaultName, body: VaultGuardIn, app=Depends(core), who=Depends(caller)):
    return app.guard.set_vault_guard(who, subscription, vault, body.guard, body.guard_subscription, body.approval_id)


@router.delete(VAULT_GUARD, response_model=VaultGuardOut, tags=TAG)
def remove_vault_guard(subscription: Sub, vault: VaultName, approval_id: Filter = None, app=Depends(core), who=Depends(caller)):
    return app.guard.remove_vault_guard(who, subscription, vault, approval_id)


@router.get("/resource-guard-requests", response_model=list[GuardRequestOut], tags=TAG)
def list_requests(guard: Filter = None, vault: Filter = None, status: Filter = None, app=Depends(core), who=Depends(caller)):
    return app.guard.list_requests(who, guard, vault, status)


@router.get("/resource-guard-requests/{request_id}", response_model=GuardRequestOut, tags=TAG)
def show_request(request_id: Id, app=Depends(core), who=Depends(caller)):
    return app.guard.show_request(who, request_id)


@router.post("/resource-guard-requests/{request_id}/approve", response_model=GuardRequestOut, tags=TAG)
def approve_request(request_id: Id, body: GuardDecisionIn | None = None, app=Depends(core), who=Depends(caller)):
    return app.guard.approve(who, request_id, body.comment if body else None)


@router.post("/resource-guard-requests/{request_id}/reject", response_model=GuardRequestOut, tags=TAG)
def reject_request(request_id: Id, body: GuardDecisionIn | None = None, app=Depends(core), who=Depends(caller)):
    return app.guard.reject(who, request_id, body.comment if body else None)


@router.get("/resource-guard-audit", response_model=list[GuardAuditOut], tags=TAG)
def list_audit(guard: Filter = None, vault: Filter = None, app=Depends(core), who=Depends(caller)):
    return app.guard.list_audit(who, guard, vault)

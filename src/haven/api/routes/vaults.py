"""Vaults and their policies."""

from fastapi import APIRouter, Depends, Request, Response, status

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import PolicyName, Sub, VaultName
from haven.services.paging import page_views
from haven.api.schemas import AlertOut, AlertSettingsIn, AlertSettingsOut, AssociatedItem, BackupPropertiesIn, EncryptionKeyIn, JobOut, VerifyIn, PolicyIn, PolicyOut, PolicyUpdate, VaultIn, VaultOut

router = APIRouter(prefix="/subscriptions/{subscription}/vaults")


@router.post("", response_model=VaultOut, status_code=status.HTTP_201_CREATED, tags=["vaults"])
def create_vault(subscription: Sub, body: VaultIn, app=Depends(core), who=Depends(caller)):
    return app.vaults.create(who, subscription, body.name, body.region, body.storage_redundancy)


@router.get("", response_model=list[VaultOut], tags=["vaults"], responses=PAGED)
def list_vaults(request: Request, response: Response, subscription: Sub, limit: Limit = 100, cursor: Cursor = None,
                app=Depends(core), who=Depends(caller)):
    """By name, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    vaults = app.vaults.list(who, subscription)
    return paged(request, response, page_views("vaults", vaults, lambda v: (v["name"], v["id"]), limit, cursor))


@router.get("/{vault}", response_model=VaultOut, tags=["vaults"])
def show_vault(subscription: Sub, vault: VaultName, app=Depends(core), who=Depends(caller)):
    return app.vaults.show(who, subscription, vault)


@router.delete("/{vault}", status_code=status.HTTP_204_NO_CONTENT, tags=["vaults"])
def delete_vault(subscription: Sub, vault: VaultName, app=Depends(core), who=Depends(caller)):
    app.vaults.delete(who, subscription, vault)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/{vault}/backup-properties", response_model=VaultOut, tags=["vaults"])
def set_backup_properties(subscription: Sub, vault: VaultName, body: BackupPropertiesIn, app=Depends(core), who=Depends(caller)):
    return app.vaults.set_properties(who, subscription, vault, body.storage_redundancy, body.soft_delete_days, body.immutability,
                                   body.approval_id)


@router.post("/{vault}/verify", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["vaults"])
def verify_vault(subscription: Sub, vault: VaultName, body: VerifyIn, app=Depends(core), who=Depends(caller)):
    return app.lifecycle.request_verify(who, subscription, vault, body.read_data, body.read_data_subset)


@router.put("/{vault}/encryption-key", response_model=VaultOut, tags=["vaults"])
def set_encryption_key(subscription: Sub, vault: VaultName, body: EncryptionKeyIn, app=Depends(core), who=Depends(caller)):
    return app.vaults.set_encryption_key(who, subscription, vault, body.key_vault, body.key)


@router.post("/{vault}/encryption-key/rotate", response_model=VaultOut, tags=["vaults"])
def rotate_encryption_key(subscription: Sub, vault: VaultName, app=Depends(core), who=Depends(caller)):
    return app.vaults.rotate_encryption_key(who, subscription, vault)


@router.put("/{vault}/alert-settings", response_model=AlertSettingsOut, tags=["alerts"])
def set_alert_settings(subscription: Sub, vault: VaultName, body: AlertSettingsIn, app=Depends(core), who=Depends(caller)):
    return app.alerts.configure(who, subscription, vault, body.webhook, body.email)


@router.get("/{vault}/alerts", response_model=list[AlertOut], tags=["alerts"], responses=PAGED)
def list_alerts(request: Request, response: Response, subscription: Sub, vault: VaultName, limit: Limit = 100, cursor: Cursor = None,
                app=Depends(core), who=Depends(caller)):
    """Newest first, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    return paged(request, response, app.alerts.page(who, subscription, vault, limit, cursor))


@router.post("/{vault}/policies", response_model=PolicyOut, status_code=status.HTTP_201_CREATED, tags=["policies"])
def create_policy(subscription: Sub, vault: VaultName, body: PolicyIn, app=Depends(core), who=Depends(caller)):
    return app.policies.create(who, subscription, vault, body.name, body.schedule.model_dump(), body.retention.model_dump())


@router.get("/{vault}/policies", response_model=list[PolicyOut], tags=["policies"], responses=PAGED)
def list_policies(request: Request, response: Response, subscription: Sub, vault: VaultName, limit: Limit = 100,
                  cursor: Cursor = None, app=Depends(core), who=Depends(caller)):
    """By name, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    policies = app.policies.list(who, subscription, vault)
    return paged(request, response, page_views("policies", policies, lambda p: (p["name"], p["id"]), limit, cursor))


@router.get("/{vault}/default-policy-for-vm", response_model=PolicyOut, tags=["policies"])
def default_policy_for_vm(subscription: Sub, vault: VaultName, app=Depends(core), who=Depends(caller)):
    return app.policies.default_for_vm(who, subscription, vault)


@router.get("/{vault}/policies/{policy}", response_model=PolicyOut, tags=["policies"])
def show_policy(subscription: Sub, vault: VaultName, policy: PolicyName, app=Depends(core), who=Depends(caller)):
    return app.policies.show(who, subscription, vault, policy)


@router.put("/{vault}/policies/{policy}", response_model=PolicyOut, tags=["policies"])
def set_policy(subscription: Sub, vault: VaultName, policy: PolicyName, body: PolicyUpdate, app=Depends(core), who=Depends(caller)):
    sched = body.schedule.model_dump() if body.schedule else None
    ret = body.retention.model_dump() if body.retention else None
    return app.policies.update(who, subscription, vault, policy, sched, ret, body.approval_id)


@router.delete("/{vault}/policies/{policy}", status_code=status.HTTP_204_NO_CONTENT, tags=["policies"])
def delete_policy(subscription: Sub, vault: VaultName, policy: PolicyName, app=Depends(core), who=Depends(caller)):
    app.policies.delete(who, subscription, vault, policy)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{vault}/policies/{policy}/items", response_model=list[AssociatedItem], tags=["policies"])
def policy_items(subscription: Sub, vault: VaultName, policy: PolicyName, app=Depends(core), who=Depends(caller)):
    return app.policies.associated_items(who, subscription, vault, policy)

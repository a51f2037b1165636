"""Protected items, on-demand backups, recovery points and restores."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import Id, Sub, VaultName, VmName
from haven.api.schemas import (
    BackupNowIn, CheckVmOut, DisableProtectionIn, EnableManyOut, EnableProtectionIn, ItemOut, JobOut, PointOut, RestoreDisksIn, SetPolicyIn,
)

router = APIRouter(prefix="/subscriptions/{subscription}")
ITEMS = "/vaults/{vault}/items"


@router.post(ITEMS, response_model=ItemOut | EnableManyOut, status_code=status.HTTP_201_CREATED, tags=["protection"],
             responses={200: {"model": EnableManyOut, "description": "vms: one result per VM (protected, or its error)"}})
def enable_protection(subscription: Sub, vault: VaultName, body: EnableProtectionIn, response: Response,
                      app=Depends(core), who=Depends(caller)):
    if body.vms is not None:
        response.status_code = status.HTTP_200_OK
        return app.protection.enable_many(who, subscription, vault, body.vms, body.policy, body.host, body.include_disks,
                                          body.exclude_disks, body.approval_id)
    return app.protection.enable(who, subscription, vault, body.vm, body.policy, body.host, body.include_disks, body.exclude_disks,
                                 body.approval_id)


@router.get(ITEMS, response_model=list[ItemOut], tags=["protection"], responses=PAGED)
def list_items(request: Request, response: Response, subscription: Sub, vault: VaultName, limit: Limit = 100, cursor: Cursor = None,
               app=Depends(core), who=Depends(caller)):
    """By VM name, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    return paged(request, response, app.protection.page_items(who, subscription, vault, limit, cursor))


@router.get(ITEMS + "/{vm}", response_model=ItemOut, tags=["protection"])
def show_item(subscription: Sub, vault: VaultName, vm: VmName, app=Depends(core), who=Depends(caller)):
    return app.protection.show_item(who, subscription, vault, vm)


@router.put(ITEMS + "/{vm}/policy", response_model=ItemOut, tags=["protection"])
def set_item_policy(subscription: Sub, vault: VaultName, vm: VmName, body: SetPolicyIn, app=Depends(core), who=Depends(caller)):
    return app.protection.set_policy(who, subscription, vault, vm, body.policy, body.approval_id)


@router.post(ITEMS + "/{vm}/disable", response_model=ItemOut, tags=["protection"])
def disable_protection(subscription: Sub, vault: VaultName, vm: VmName, body: DisableProtectionIn, app=Depends(core), who=Depends(caller)):
    return app.protection.disable(who, subscription, vault, vm, body.delete_backup_data, body.approval_id)


@router.post(ITEMS + "/{vm}/undelete", response_model=ItemOut, tags=["protection"])
def undelete(subscription: Sub, vault: VaultName, vm: VmName, app=Depends(core), who=Depends(caller)):
    return app.protection.undelete(who, subscription, vault, vm)


@router.post(ITEMS + "/{vm}/backup", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["protection"])
def backup_now(subscription: Sub, vault: VaultName, vm: VmName, body: BackupNowIn, app=Depends(core), who=Depends(caller)):
    return app.protection.backup_now(who, subscription, vault, vm, body.retain_until)


@router.get("/protection/check-vm", response_model=CheckVmOut, tags=["protection"])
def check_vm(subscription: Sub, vm: Annotated[str, Query(min_length=1, max_length=128)],
             host: Annotated[str | None, Query(min_length=1, max_length=128)] = None, app=Depends(core), who=Depends(caller)):
    return app.protection.check_vm(who, subscription, vm, host)


@router.get(ITEMS + "/{vm}/recovery-points", response_model=list[PointOut], tags=["recovery points"], responses=PAGED)
def list_points(request: Request, response: Response, subscription: Sub, vault: VaultName, vm: VmName, limit: Limit = 100,
                cursor: Cursor = None, app=Depends(core), who=Depends(caller)):
    """Newest first, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    return paged(request, response, app.points.page(who, subscription, vault, vm, limit, cursor))


@router.get(ITEMS + "/{vm}/recovery-points/{point}", response_model=PointOut, tags=["recovery points"])
def show_point(subscription: Sub, vault: VaultName, vm: VmName, point: Id, app=Depends(core), who=Depends(caller)):
    return app.points.show(who, subscription, vault, vm, point)


@router.post(ITEMS + "/{vm}/recovery-points/{point}/restore-disks", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def restore_disks(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: RestoreDisksIn, app=Depends(core), who=Depends(caller)):
    return app.points.restore_disks(who, subscription, vault, vm, point, body.target, body.disks, body.format, body.host)

"""Hosts and the VMs their agents report."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from haven.api.deps import caller, core
from haven.api.schemas import HostOut, VmOut

router = APIRouter(tags=["inventory"])


@router.get("/hosts", response_model=list[HostOut])
def list_hosts(app=Depends(core), who=Depends(caller)):
    return app.inventory.list_hosts(who)


@router.get("/vms", response_model=list[VmOut])
def list_vms(region: Annotated[str | None, Query(min_length=1, max_length=64)] = None, app=Depends(core), who=Depends(caller)):
    return app.inventory.list_vms(who, region)

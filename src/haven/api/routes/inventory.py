"""Hosts and the VMs their agents report."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import HostName, Sub
from haven.api.schemas import HostOut, VmOut
from haven.services.paging import page_views

router = APIRouter(tags=["inventory"])


@router.get("/hosts", response_model=list[HostOut], responses=PAGED)
def list_hosts(request: Request, response: Response, limit: Limit = 100, cursor: Cursor = None, app=Depends(core), who=Depends(caller)):
    """By name, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    hosts = app.inventory.list_hosts(who)
    return paged(request, response, page_views("hosts", hosts, lambda h: (h["name"], h["id"]), limit, cursor))


@router.get("/vms", response_model=list[VmOut], responses=PAGED)
def list_vms(request: Request, response: Response, region: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
             limit: Limit = 100, cursor: Cursor = None, app=Depends(core), who=Depends(caller)):
    """By name, ``limit`` at a time; X-Next-Cursor / Link (rel=next) lead to the next page."""
    return paged(request, response, app.inventory.page_vms(who, region, limit, cursor))


@router.post("/vms/refresh")
def refresh_vms(app=Depends(core), who=Depends(caller)) -> dict:
    """The server's own hosts report their VMs now (a new VM shows at once); remote hosts report every inventory round."""
    return app.inventory.refresh(who)


@router.post("/hosts/{host}/shares/{subscription}", response_model=HostOut)
def share_host(host: HostName, subscription: Sub, app=Depends(core), who=Depends(caller)):
    """Share the host with the subscription: its Readers see the host's VMs, its Operators protect them (global Owner only)."""
    return app.inventory.share_host(who, host, subscription)


@router.delete("/hosts/{host}/shares/{subscription}", response_model=HostOut)
def unshare_host(host: HostName, subscription: Sub, app=Depends(core), who=Depends(caller)):
    """Stop sharing the host with the subscription; refused while the subscription protects VMs there (global Owner only)."""
    return app.inventory.unshare_host(who, host, subscription)

"""API routes for preparing the environment: ``GET …/prepare/check``."""

from typing import Annotated, Optional

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from haven.api.deps import caller, core
from haven.api.routes.params import Sub

router = APIRouter()


class PrepareCheckItem(BaseModel):
    check: str
    status: Literal["pass", "warn", "fail"]
    reason: str
    fix: str | None = None
    code: str | None = None
    details: dict[str, Any] = {}


class PrepareCheckOut(BaseModel):
    vm: str
    host: str
    region: str
    power_state: str
    vault: str | None = None
    verdict: Literal["pass", "warn", "fail"]
    ok: bool
    checks: list[PrepareCheckItem]


@router.get("/subscriptions/{subscription}/prepare/check", response_model=PrepareCheckOut, tags=["prepare"],
            summary="Check every prerequisite of backing up a VM (vault, guest agent, extension, network, support matrix)")
def prepare_check(
    subscription: Sub,
    vm: Annotated[str, Query(min_length=1, max_length=128, description="The VM's name", examples=["web1"])],
    vault: Annotated[Optional[str], Query(min_length=1, max_length=100, description="The vault that will protect it")] = None,
    host: Annotated[Optional[str], Query(min_length=1, max_length=128, description="The VM's host, when names repeat")] = None,
    timeout: Annotated[float, Query(gt=0, le=120, description="Seconds per network step")] = 10.0,
    app=Depends(core),
    who=Depends(caller),
) -> dict:
    from haven.services.prepare import PrepareService

    service = getattr(app, "prepare", None) or PrepareService(app)
    return service.check(who, subscription, vm, vault=vault, host=host, timeout=timeout)

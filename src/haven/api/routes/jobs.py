"""Jobs: list with filters, show, stop."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import Id, Sub, VaultName
from haven.api.schemas import JobOut

router = APIRouter(prefix="/subscriptions/{subscription}", tags=["jobs"])


@router.get("/vaults/{vault}/jobs", response_model=list[JobOut], responses=PAGED)
def list_jobs(
    request: Request, response: Response, subscription: Sub, vault: VaultName,
    status: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[str | None, Query(max_length=32)] = None,
    vm: Annotated[str | None, Query(max_length=128)] = None,
    start: datetime | None = None, end: datetime | None = None,
    limit: Limit = 100, cursor: Cursor = None,
    app=Depends(core), who=Depends(caller),
):
    """Newest first, ``limit`` at a time. When there is more, the answer carries ``X-Next-Cursor`` and a ``Link``
    header (``rel="next"``) to the next page."""
    return paged(request, response, app.jobs.page(who, subscription, vault, status, type, vm, _aware(start), _aware(end), limit, cursor))


@router.get("/jobs/{job_id}", response_model=JobOut)
def show_job(subscription: Sub, job_id: Id, app=Depends(core), who=Depends(caller)):
    return app.jobs.show(who, subscription, job_id)


@router.post("/jobs/{job_id}/stop", response_model=JobOut)
def stop_job(subscription: Sub, job_id: Id, app=Depends(core), who=Depends(caller)):
    return app.jobs.stop(who, subscription, job_id)


def _aware(value: datetime | None) -> datetime | None:
    from datetime import timezone

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)

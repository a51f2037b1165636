"""Jobs: list with filters, show, stop."""

import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import Id, Sub, VaultName
from haven.api.schemas import JobOut
from haven.domain.enums import JobStatus

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
def show_job(
    subscription: Sub, job_id: Id,
    wait: Annotated[float, Query(ge=0, le=30, description="Seconds to hold the answer until the job's status changes "
                                                           "(it answers at once when it does, or when the job has ended).")] = 0,
    app=Depends(core), who=Depends(caller),
):
    """The job. With ``wait``, a long poll: the answer comes when the status differs from the one the request
    found, or after ``wait`` seconds with the job as it is then."""
    seen = app.queue.wakeup.generation
    job = app.jobs.show(who, subscription, job_id)
    first, end = job["status"], time.monotonic() + wait
    while job["status"] == first and not JobStatus(first).finished and (left := end - time.monotonic()) > 0:
        # woken when this process ends a job; the re-read every quarter second sees the rest (a claim, a stop)
        app.queue.wakeup.wait(seen, min(left, 0.25))
        seen = app.queue.wakeup.generation
        job = app.jobs.show(who, subscription, job_id)
    return job


@router.post("/jobs/{job_id}/stop", response_model=JobOut)
def stop_job(subscription: Sub, job_id: Id, app=Depends(core), who=Depends(caller)):
    return app.jobs.stop(who, subscription, job_id)


def _aware(value: datetime | None) -> datetime | None:
    from datetime import timezone

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)

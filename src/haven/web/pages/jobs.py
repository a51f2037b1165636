"""Jobs: the list with filters, a job's page, its live status and stop."""

from __future__ import annotations

import math
from datetime import timedelta
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from haven.domain.enums import JobStatus, JobType
from haven.errors import HavenError
from haven.services.auth import Caller
from haven.web.session import SignInRequired, check_csrf, current_caller
from haven.web.pages.base import _go, _int_or_none, _render, form_page, router, _sub
from haven.web.pages.present import FINISHED, JOB_LABELS, RESTORE_KINDS, _dt, _duration, _percent

# ------------------------------------------------------------------ jobs


def _visible_vaults(core, caller: Caller) -> list[tuple[dict, dict]]:
    out = []
    for sub in core.subscriptions.list(caller):
        for v in core.vaults.list(caller, sub["id"]):
            out.append((sub, v))
    return out


@router.get("/jobs")
def jobs_page(request: Request, vault: str = "", status: str = "", type: str = "", vm: str = "", hours: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    vaults = _visible_vaults(core, caller)
    start = None
    if hours.strip():
        h = _int_or_none(hours)
        start = core.clock.now() - timedelta(hours=h) if h else None
    jobs = []
    for sub, v in vaults:
        key = f"{sub['name']}/{v['name']}"
        if vault and vault != key:
            continue
        kinds = RESTORE_KINDS if type == "any-restore" else None
        for j in core.jobs.list(caller, sub["id"], v["name"], status or None, None if kinds else (type or None), vm or None, start, None,
                                200, types=kinds):
            jobs.append({**j, "sub": sub["name"], "vault": v["name"]})
    jobs.sort(key=lambda j: j["created_at"], reverse=True)
    filters = {"vault": vault, "status": status, "type": type, "vm": vm, "hours": hours}
    return _render(request, "jobs.html", caller, jobs=jobs[:300], vaults=vaults, filters=filters,
                   statuses=[s.value for s in JobStatus], types=[(t.value, JOB_LABELS.get(t.value, t.value)) for t in JobType])


@router.get("/s/{sub}/jobs/{job_id}")
def job_page(request: Request, sub: str, job_id: str):
    core = request.app.state.core
    caller = current_caller(request)
    subscription = _sub(core, caller, sub)
    job = core.jobs.show(caller, sub, job_id)
    vault = next((v for s, v in _visible_vaults(core, caller) if v["id"] == job["vault_id"]), None)
    quiet = {"msg": None} if job["status"] in (JobStatus.FAILED.value, JobStatus.CANCELLED.value) else {}  # no "started" notice over a failed job
    return _render(request, "job.html", caller, sub=subscription, job=job, vault=vault, **quiet)


@router.get("/s/{sub}/jobs/{job_id}/status")
def job_status(request: Request, sub: str, job_id: str):
    """Live progress for the pages' polling script (authenticated by the session cookie)."""
    core = request.app.state.core
    try:
        caller = current_caller(request)
        job = core.jobs.show(caller, sub, job_id)
    except SignInRequired:
        return JSONResponse({"error": "signed out"}, status_code=401)
    except HavenError as e:
        return JSONResponse(e.to_payload(), status_code=e.http_status)
    pct = _percent(job)
    active = next((t["name"] for t in job["subtasks"] if t.get("status") == "InProgress"), None)
    return JSONResponse(jsonable_encoder({
        "id": job["id"], "status": job["status"], "finished": job["status"] in FINISHED,
        "percent": None if pct is None or math.isnan(pct) else pct, "active": active,
        "duration": _duration(job["duration_seconds"]), "started": _dt(job["started_at"]), "subtasks": job["subtasks"], "error": job["error"],
    }))


@router.post("/s/{sub}/jobs/{job_id}/stop")
@form_page(lambda request: f"/ui/s/{quote(request.path_params['sub'], safe='')}/jobs/{quote(request.path_params['job_id'], safe='')}")
def job_stop(request: Request, sub: str, job_id: str, csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    core.jobs.stop(caller, sub, job_id)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job_id}", "Cancellation requested.")


# ------------------------------------------------------------------ readiness (prepare check) and key vault

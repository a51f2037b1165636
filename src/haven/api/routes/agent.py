"""The agent API: what a remote ``haven agent`` calls, with its own host's credential only."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from haven.api.deps import caller, core
from haven.api.routes.params import Id
from haven.api.schemas import HostAddedOut, HostIn, Strict

router = APIRouter(tags=["agent"])
JOB = "/agent/jobs/{job_id}"
Worker = Field(min_length=1, max_length=24, description="The agent's worker id (its lease owner).")


class HelloIn(Strict):
    adapter: str = Field(min_length=1, max_length=1024)
    version: str = Field(min_length=1, max_length=32)
    job_types: list[str] = Field(max_length=16)


class HelloOut(BaseModel):
    id: str
    name: str
    region: str
    job_types: list[str]
    lease_seconds: float
    min_guest_agent_version: str = Field(description="The minimum guest-agent version the agent's probes and backups apply.")


class VmReportIn(Strict):
    vms: list[dict[str, Any]] = Field(max_length=10000)


class VmReportOut(BaseModel):
    reported: int
    min_guest_agent_version: str = Field(description="The minimum guest-agent version the agent's next round applies.")


class ClaimIn(Strict):
    worker: str = Worker
    types: list[str] = Field(max_length=16)


class ClaimedOut(BaseModel):
    id: str
    type: str
    operation: str
    plan: dict[str, Any]
    storage: dict[str, Any]


class WorkerIn(Strict):
    worker: str = Worker


class ProgressIn(WorkerIn):
    subtasks: list[dict[str, Any]] = Field(max_length=256)
    warnings: list[str] = Field(default_factory=list, max_length=64)


class UnwrapIn(WorkerIn):
    wrapped: str = Field(min_length=4, max_length=4096, description="Base64 of the vault's wrapped data key.")


class CompleteIn(WorkerIn):
    outcome: dict[str, Any]


class ErrorIn(BaseModel):
    code: str = Field(min_length=1, max_length=128)
    message: str = Field(max_length=8192)
    recommendation: str | None = Field(default=None, max_length=8192)
    details: dict[str, Any] = Field(default_factory=dict)


class FailIn(WorkerIn):
    error: ErrorIn
    cancelled: bool = False


class HeartbeatOut(BaseModel):
    lease: bool
    cancel: bool


@router.post("/hosts", response_model=HostAddedOut, status_code=status.HTTP_201_CREATED, tags=["inventory"])
def add_host(body: HostIn, app=Depends(core), who=Depends(caller)):
    """Register a remote host; the answer holds its agent's credential, once."""
    return app.agents.add_host(who, body.name, body.region, body.adapter, body.shares)


@router.post("/hosts/{host}/agent-token", response_model=HostAddedOut, tags=["inventory"])
def rotate_agent_token(host: Annotated[str, PathParam(min_length=1, max_length=128)], app=Depends(core), who=Depends(caller)):
    """A new credential for the host's agent; the old ones stop working at once."""
    return app.agents.rotate_token(who, host)


@router.post("/agent/hello", response_model=HelloOut)
def hello(body: HelloIn, app=Depends(core), who=Depends(caller)):
    """An agent starts: it says which adapter, version and job types it runs."""
    return app.agents.hello(who, body.adapter, body.version, body.job_types)


@router.put("/agent/vms", response_model=VmReportOut)
def report_vms(body: VmReportIn, app=Depends(core), who=Depends(caller)):
    """The VMs the agent's adapter sees now; the answer holds the server's settings the agent applies."""
    return app.agents.report_vms(who, body.vms)


class NetworkIn(Strict):
    config: dict[str, Any] = Field(description="The agent's proxy configuration, without secrets.")
    vaults: dict[str, dict[str, Any]] = Field(max_length=1000, description="vault id -> the probe of its storage.")


@router.get("/agent/storage-targets", response_model=list[dict])
def storage_targets(app=Depends(core), who=Depends(caller)):
    """The vaults of the agent's region and how to reach each, for the agent's connectivity probe."""
    return app.agents.storage_targets(who)


@router.put("/agent/network", status_code=status.HTTP_204_NO_CONTENT)
def report_network(body: NetworkIn, app=Depends(core), who=Depends(caller)):
    """The agent's own probe of its path to each vault's storage (haven prepare check shows it)."""
    app.agents.report_network(who, body.config, body.vaults)


@router.post("/agent/jobs/claim", response_model=ClaimedOut, responses={204: {"description": "No job is queued for this host."}})
def claim(body: ClaimIn, app=Depends(core), who=Depends(caller)):
    """Take the oldest job queued for the agent's host, with its plan (and, for a vault in S3 or Azure Blob, its
    region's storage endpoint and credentials, for this job only)."""
    job = app.agents.claim(who, body.worker, body.types)
    return app.capabilities.with_direct_storage(job) if job is not None else Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(JOB + "/heartbeat", response_model=HeartbeatOut)
def heartbeat(job_id: Id, body: WorkerIn, app=Depends(core), who=Depends(caller)):
    """Renew the job's lease; says whether the lease is still held and whether a user asked to stop."""
    return app.agents.heartbeat(who, job_id, body.worker)


@router.post(JOB + "/progress", status_code=status.HTTP_204_NO_CONTENT)
def progress(job_id: Id, body: ProgressIn, app=Depends(core), who=Depends(caller)):
    """Subtasks with percent done, and warnings for the job."""
    app.agents.progress(who, job_id, body.worker, body.subtasks, body.warnings)


@router.post(JOB + "/unwrap", response_model=dict)
def unwrap(job_id: Id, body: UnwrapIn, app=Depends(core), who=Depends(caller)):
    """The data key of the vault the running job writes to (the KEK never leaves the server)."""
    return {"key": app.agents.unwrap(who, job_id, body.worker, body.wrapped)}


@router.post(JOB + "/complete", response_model=dict)
def complete(job_id: Id, body: CompleteIn, app=Depends(core), who=Depends(caller)):
    """Record the job's outcome (for a backup: its recovery point, once its manifest is confirmed stored)."""
    return {"status": app.agents.complete(who, job_id, body.worker, body.outcome)}


@router.post(JOB + "/fail", status_code=status.HTTP_204_NO_CONTENT)
def fail(job_id: Id, body: FailIn, app=Depends(core), who=Depends(caller)):
    """The job failed (or stopped on request) on the host; nothing of it is recorded."""
    app.agents.fail(who, job_id, body.worker, body.error.model_dump(), body.cancelled)


__all__ = ["router"]

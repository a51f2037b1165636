"""The job types a host runs, by ``JobType``: how to read the plan, run it, and send the outcome.

The remote agent dispatches through ``HOST_JOBS`` and the server's handlers
(``services.execution.handlers``) run the same entries for the server's own host, so the host's part
of a job is written once. Job types missing here run only on the server's host (they need the
server's own state mid-way: the paired region's storage, the undo point of a replace, the
file-recovery sessions folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from haven.domain.enums import JobType
from haven.work.backup import run_backup
from haven.work.plans import (
    BackupOutcome,
    BackupPlan,
    RestoreDisksOutcome,
    RestorePlan,
    RestoreVmOutcome,
    RestoreVmPlan,
    Wire,
)
from haven.work.protocols import Adapter, JobWork, Repository
from haven.work.restore import run_restore_disks, run_restore_vm

__all__ = ["Host", "HostJob", "HOST_JOBS", "host_job"]

P = TypeVar("P", bound=Wire)
O = TypeVar("O", bound=Wire)


@dataclass(frozen=True)
class Host:
    """What a host brings to a job: its hypervisor adapter and a folder for new VMs' disks."""

    adapter: Adapter
    staging_root: Path


@dataclass(frozen=True)
class HostJob(Generic[P, O]):
    """One job type as a host runs it."""

    job_type: JobType
    plan_type: type[P]
    outcome_type: type[O]
    runner: Callable[[P, Host, Repository, JobWork], O]
    #: the host's VM list changed (a new VM): report it right after the job
    changes_inventory: bool = False

    def run(self, plan: P, host: Host, repo: Repository, ctx: JobWork) -> O:
        return self.runner(plan, host, repo, ctx)

    def run_wire(self, plan: dict[str, Any], host: Host, repo: Repository, ctx: JobWork) -> dict[str, Any]:
        """The agent API's form: a plan as JSON in, the outcome as JSON out."""
        return self.run(self.plan_type.from_dict(plan), host, repo, ctx).to_dict()


HOST_JOBS: dict[JobType, HostJob[Any, Any]] = {
    JobType.BACKUP: HostJob(JobType.BACKUP, BackupPlan, BackupOutcome,
                            lambda plan, host, repo, ctx: run_backup(plan, host.adapter, repo, ctx)),
    JobType.RESTORE: HostJob(JobType.RESTORE, RestorePlan, RestoreDisksOutcome,
                             lambda plan, host, repo, ctx: run_restore_disks(plan, repo, ctx)),
    JobType.RESTORE_VM: HostJob(JobType.RESTORE_VM, RestoreVmPlan, RestoreVmOutcome,
                                lambda plan, host, repo, ctx: run_restore_vm(plan, host.adapter, repo, ctx, host.staging_root),
                                changes_inventory=True),
}


def host_job(job_type: str) -> HostJob[Any, Any] | None:
    """The host's part of ``job_type``, or None when only the server's host runs it."""
    try:
        return HOST_JOBS.get(JobType(job_type))
    except ValueError:
        return None

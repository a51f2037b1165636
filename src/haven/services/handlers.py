"""The job handler registry: every job type this server runs, one handler each, keyed by ``JobType``.

The job runner (``jobs.runner``), the agent API (``AgentService.claim`` / ``complete``) and, through
``work.HOST_JOBS``, the remote agent dispatch through the same entries.
"""

from __future__ import annotations

from typing import Any

from haven.domain.enums import JobType
from haven.services.execution import BackupHandler, RestoreHandler, VerifyHandler
from haven.services.instant import instant_handlers
from haven.services.restore_jobs import restore_handlers

__all__ = ["HandlerRegistry", "handlers"]


class HandlerRegistry(dict):
    """``JobType`` -> handler; looked up by a job's stored type string as well (``JobType`` is a ``str``)."""

    def __init__(self, entries: dict[JobType, Any]):
        super().__init__(entries)


def handlers(core) -> HandlerRegistry:
    """Every job type this server runs, one handler each."""
    entries: dict[JobType, Any] = {JobType.BACKUP: BackupHandler(core), JobType.RESTORE: RestoreHandler(core),
                                   JobType.VERIFY: VerifyHandler(core), **restore_handlers(core), **instant_handlers(core)}
    return HandlerRegistry(entries)


"""What the host's part of a job needs, as small protocols: a job context, a vault's repository, a
hypervisor adapter. The in-process runner's ``JobContext``, the remote agent's ``RemoteJobContext``,
``engine.Repository`` and every ``HypervisorAdapter`` satisfy them; ``work/`` imports none of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from haven.engine.source import DiskSource
from haven.hypervisor.types import Snapshot, VmInfo
from haven.progress import Progress

__all__ = ["JobWork", "Repository", "Adapter", "BackupSummary", "PointDisk", "PointManifest"]


class JobWork(Protocol):
    """A job as the host's work sees it: subtasks with percent done, warnings, and the stop signals."""

    job_id: str
    cancel: threading.Event

    def subtask(self, name: str, status: str = "InProgress", percent: float | None = None, **extra: Any) -> None: ...

    def progress_for(self, name: str) -> Progress: ...

    def warn(self, message: str) -> None: ...

    def check_cancelled(self) -> None:
        """Raise ``LeaseLost`` or ``JobCancelled`` when the job must stop."""


class BackupSummary(Protocol):
    bytes_read: int
    bytes_new: int


class PointDisk(Protocol):
    name: str
    size: int
    format: str


class PointManifest(Protocol):
    point_id: str
    disks: list[PointDisk]
    meta: dict[str, Any]


class Repository(Protocol):
    """The part of ``engine.Repository`` the host's work uses."""

    def backup(self, item_id: str, point_id: str, disks: list[DiskSource], meta: dict[str, Any],
               parent_point_id: str | None = None, progress: Progress = ..., cancel: threading.Event | None = None) -> BackupSummary: ...

    def restore_disk(self, item_id: str, point_id: str, disk_name: str, target_path: str, fmt: str = "raw",
                     progress: Progress = ...) -> Any: ...

    def load_point(self, item_id: str, point_id: str) -> PointManifest: ...


class Adapter(Protocol):
    """The part of ``hypervisor.types.HypervisorAdapter`` the host's work uses."""

    def list_vms(self) -> list[VmInfo]: ...

    def describe(self, name: str, probe_guest: bool = True) -> VmInfo: ...

    def snapshot(self, name: str, previous_checkpoint: str | None = None,
                 include_disks: list[str] | None = None) -> AbstractContextManager[Snapshot]: ...

    def define_vm(self, name: str, disk_paths: dict[str, str], definition: Any) -> VmInfo: ...

    def acquire_vm(self, name: str, purpose: str) -> Callable[[], None]: ...

    def new_vm_staging(self, name: str, tag: str) -> Path | None: ...

    def adopt_new_vm_disks(self, name: str, files: dict[str, str]) -> tuple[dict[str, str], Path] | None: ...

"""States and kinds shared by the model, the API and the dashboard."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role", "JobStatus", "JobType", "ProtectionState", "Consistency", "PointState", "PrincipalKind"]


class Role(StrEnum):
    """Per-subscription roles, each allowing what the previous one does and more."""

    READER = "Reader"  # read everything
    OPERATOR = "Operator"  # + backup and restore, enable protection, stop jobs; no deletes, no policy changes
    CONTRIBUTOR = "Contributor"  # + create/delete vaults and policies, stop protection, delete data
    OWNER = "Owner"  # + manage tokens and role assignments

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


class PrincipalKind(StrEnum):
    USER = "user"
    AGENT = "agent"  # a host agent: reaches only its own host's VMs and jobs
    SERVICE = "service"  # built-in principals such as "Backup Management Service"


class JobStatus(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    CANCELLING = "Cancelling"
    COMPLETED = "Completed"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS, JobStatus.FAILED, JobStatus.CANCELLED)


class JobType(StrEnum):
    """Every kind of job; the values are stored in ``jobs.type`` and shown by the API, never renamed."""

    CONFIGURE_BACKUP = "ConfigureBackup"
    BACKUP = "Backup"
    RESTORE = "Restore"  # restore-disks
    RESTORE_VM = "RestoreVm"
    REPLACE_DISKS = "ReplaceDisks"
    CROSS_REGION_RESTORE = "CrossRegionRestore"  # restore-disks from the paired region's copy
    FILE_RECOVERY = "FileRecovery"  # mount a recovery point as read-only NBD exports
    DISABLE_BACKUP = "DisableBackup"
    DELETE_BACKUP_DATA = "DeleteBackupData"
    VERIFY = "Verify"
    GARBAGE_COLLECT = "GarbageCollect"
    INSTANT_RESTORE = "InstantRestore"  # a VM started on overlays over a point served from the vault
    INSTANT_COMMIT = "InstantCommit"  # the instant-restored VM moved to local disks while it runs
    INSTANT_DISCARD = "InstantDiscard"


class ProtectionState(StrEnum):
    PROTECTED = "Protected"
    PROTECTION_STOPPED = "ProtectionStopped"  # stopped, data kept
    SOFT_DELETED = "SoftDeleted"  # stopped, data deleted: recoverable until purge


class Consistency(StrEnum):
    APPLICATION = "ApplicationConsistent"
    FILE_SYSTEM = "FileSystemConsistent"
    CRASH = "CrashConsistent"


class PointState(StrEnum):
    AVAILABLE = "Available"
    SOFT_DELETED = "SoftDeleted"
    CORRUPT = "Corrupt"  # the last vault verify found data it needs missing or damaged; a later clean verify clears it

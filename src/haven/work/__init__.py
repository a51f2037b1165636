"""The host's part of every job: what runs on the VM's host, in ``haven serve`` for its own host and
in ``haven agent`` on any other.

Services plan a job and record its outcome; ``work`` carries it out with a plan (``plans``), a job
context, a vault's repository and a hypervisor adapter (``protocols``), and never touches the
database, the API or the CLI. ``registry.HOST_JOBS`` maps each job type a host agent runs to its
plan, outcome and run function.
"""

from haven.work.backup import SNAPSHOT, TRANSFER, consistency_label, run_backup
from haven.work.plans import (
    BackupOutcome,
    BackupPlan,
    FileRecoveryPlan,
    ReplaceDisksOutcome,
    ReplaceDisksPlan,
    RestoreDisksOutcome,
    RestorePlan,
    RestoreVmOutcome,
    RestoreVmPlan,
)
from haven.work.registry import HOST_JOBS, Host, HostJob, host_job
from haven.work.restore import restore_disks_into, run_cross_region_restore, run_replace_disks, run_restore_disks, run_restore_vm

__all__ = [
    "BackupPlan", "BackupOutcome", "RestorePlan", "RestoreDisksOutcome", "RestoreVmPlan", "RestoreVmOutcome",
    "ReplaceDisksPlan", "ReplaceDisksOutcome", "FileRecoveryPlan", "SNAPSHOT", "TRANSFER", "consistency_label",
    "run_backup", "run_restore_disks", "run_cross_region_restore", "run_restore_vm", "run_replace_disks", "restore_disks_into",
    "Host", "HostJob", "HOST_JOBS", "host_job",
]

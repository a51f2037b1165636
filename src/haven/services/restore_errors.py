"""The errors of the restore use cases (restore-vm, replace disks, cross-region restore, file recovery,
vault import). Those the host itself raises live in ``haven.work.errors`` and are re-exported here."""

from __future__ import annotations

from haven.errors import Conflict, NotFound, PreconditionFailed, UserError
from haven.work.errors import FileRecoveryToolMissing, ReplaceDisksMismatch, ReplaceDisksVmRunning, RestoreVmNameInUse

__all__ = ["RestoreVmNameInUse", "RestoreVmNameInvalid", "RestoreHostInvalid", "ReplaceDisksVmRunning", "ReplaceDisksBusy",
           "ReplaceDisksMismatch", "CrossRegionRestoreUnavailable", "PointNotReplicated", "MountDurationInvalid",
           "FileRecoverySessionNotFound", "FileRecoveryToolMissing", "VaultImportInvalid", "VaultImportConflict", "MasterKeyInvalid"]


class RestoreVmNameInvalid(UserError):
    code = "UserErrorRestoreVmNameInvalid"
    message = "{name!r} is not a valid name for the restored VM."
    recommendation = "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or a digit."


class RestoreHostInvalid(UserError):
    code = "UserErrorRestoreHostInvalid"
    message = "No host {host!r} to restore to in region {region!r}: {reason}"
    recommendation = "Pick a host of region {region!r} (haven host list); a VM is restored in its vault's region (or the paired region with --use-secondary-region)."


class ReplaceDisksBusy(Conflict):
    code = "UserErrorReplaceDisksOperationInProgress"
    message = "Another backup or restore of {vm!r} is queued or running (job {job_id})."
    recommendation = "Wait for job {job_id} to finish (haven job wait --name {job_id}), then try again."


class CrossRegionRestoreUnavailable(PreconditionFailed):
    code = "UserErrorCrossRegionRestoreNotAvailable"
    message = "Vault {vault!r} uses {redundancy} storage{reason}: it has no copy in a secondary region."
    recommendation = "Cross-region restore needs a GRS vault whose region has a paired region; restore from the primary region instead."


class PointNotReplicated(NotFound):
    code = "UserErrorRecoveryPointNotInSecondaryRegion"
    message = "Recovery point {point} of {vm!r} is not (yet) in the secondary region {region!r}."
    recommendation = "Replication runs after every backup; restore an older point that is already replicated, or from the primary region."


class MountDurationInvalid(UserError):
    code = "UserErrorFileRecoveryDurationInvalid"
    message = "A recovery point can stay mounted between a few seconds and {max} hours, not {hours} hours."
    recommendation = "Give --hours between 0.01 and {max} (the default is 12)."
    recommendation_ui = "Keep it mounted between 0.01 and {max} hours (12 by default)."


class FileRecoverySessionNotFound(NotFound):
    code = "UserErrorFileRecoverySessionNotFound"
    message = "Recovery point {point} of {vm!r} is not mounted."
    recommendation = "Mount it first with 'haven restore files mount-rp'; mounts close by themselves when their time is up."


class VaultImportInvalid(UserError):
    code = "UserErrorVaultImportInvalid"
    message = "The storage at {location} cannot be imported: {reason}"
    recommendation = "Give the vault's storage URL (e.g. file:///srv/haven/storage/local/<vault id>) and the old server's master key file."


class VaultImportConflict(Conflict):
    code = "UserErrorVaultImportConflict"
    message = "Vault {vault!r} cannot be imported: {reason}"
    recommendation = "Import under another name (--name), or remove the conflicting vault or VM from this server first."


class MasterKeyInvalid(UserError):
    code = "UserErrorMasterKeyInvalid"
    message = "The master key given is not a valid key file ({reason})."
    recommendation = "Pass the old server's $HAVEN_HOME/master.key file as it is (32 bytes), e.g. --master-key-file /backup/master.key."

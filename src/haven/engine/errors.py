"""The storage engine's errors: every one derives from a category of ``haven.errors``.

Backend errors carry ``permanent``: a ``Transient`` subclass may be retried, anything else may not.
"""

from __future__ import annotations

from haven.errors import Conflict, InternalError, NotFound, PreconditionFailed, Transient, UserError

__all__ = [
    "GcRefused",
    "StorageUnavailable",
    "StorageTimeout",
    "StorageUploadNotConfirmed",
    "StorageObjectNotFound",
    "StorageAccessDenied",
    "StorageRequestRejected",
    "StorageVaultFull",
    "ChunkCorrupt",
    "ChunkMissing",
    "ObjectCorrupt",
    "ReadBackMismatch",
    "RepositoryKeyMismatch",
    "DataKeyBindingMismatch",
    "RepositoryAlreadyInitialised",
    "RepositoryNotInitialised",
    "RepositoryFormatUnsupported",
    "RepositoryLocked",
    "RecoveryPointNotFound",
    "RecoveryPointExists",
    "DiskNotFound",
    "InvalidStorageUrl",
    "InvalidObjectName",
    "BackupCancelled",
    "SourceReadFailed",
    "RestoreTargetFailed",
]


# ---- backend (transport) errors ----


class StorageUnavailable(Transient):
    code = "StorageErrorBackendUnavailable"
    message = "The storage endpoint did not answer as expected ({detail})."
    recommendation = "Check that the storage endpoint is reachable from this host (network path, proxy) and retry."


class StorageTimeout(Transient):
    code = "StorageErrorTimeout"
    message = "The storage endpoint did not answer in time ({detail})."
    recommendation = "Check the network path to the storage endpoint (proxy, firewall) and retry."


class StorageUploadNotConfirmed(Transient):
    code = "StorageErrorUploadNotConfirmed"
    message = "{count} object(s) written to storage were not found there afterwards."
    recommendation = "The storage endpoint lost writes it acknowledged; check its health, then run the backup again."


class StorageObjectNotFound(NotFound):
    code = "StorageErrorObjectNotFound"
    message = "The object {name!r} does not exist in the vault's storage."
    recommendation = "Run 'haven vault verify' to find what is missing and which recovery points it affects."


class StorageAccessDenied(PreconditionFailed):
    code = "StorageErrorAccessDenied"
    message = "The storage endpoint refused the credentials ({detail})."
    recommendation = "Check the storage account key, access keys or token configured for the vault."


class StorageRequestRejected(PreconditionFailed):
    code = "StorageErrorRequestRejected"
    message = "The storage endpoint rejected the request permanently ({detail})."
    recommendation = "Check the storage endpoint's configuration (container or bucket name, permissions, quota)."


class StorageVaultFull(PreconditionFailed):
    """No space or quota left where the vault is stored: retrying cannot help until space is made."""

    code = "StorageErrorVaultFull"
    message = "The vault's storage is full: nothing more can be written there ({detail})."
    recommendation = ("Make room where the vault is stored: free space on that disk, grow the disk or its quota, or move the "
                      "vault to larger storage; shorter retention (haven policy set) lets garbage collection reclaim expired "
                      "points. Then run the backup again; what was already stored is intact.")


# ---- integrity ----


class ChunkCorrupt(InternalError):
    code = "StorageErrorChunkCorrupt"
    message = "Chunk {chunk_id} failed authentication: it was altered, truncated or swapped."
    recommendation = "Run 'haven vault verify --read-data' to quarantine it; the next backup of an affected VM stores it again."


class ChunkMissing(InternalError):
    code = "StorageErrorChunkMissing"
    message = "Chunk {chunk_id} referenced by {item_id}/{point_id} is missing from the vault's storage."
    recommendation = "Run 'haven vault verify' to list affected recovery points; the next backup of the VM stores the chunk again."


class ObjectCorrupt(InternalError):
    code = "StorageErrorObjectCorrupt"
    message = "The vault object {name!r} failed authentication or could not be decoded."
    recommendation = "Run 'haven vault verify'; restore the object from a replica (GRS) if the vault has one."


class ReadBackMismatch(InternalError):
    code = "StorageErrorReadBackMismatch"
    message = "A chunk did not decode to the data it was made from before upload (chunk {chunk_id})."
    recommendation = "This points at faulty memory or CPU on the host; check the host's hardware and retry the backup."


# ---- repository state ----


class RepositoryKeyMismatch(PreconditionFailed):
    code = "UserErrorRepositoryKeyMismatch"
    message = "The vault's data key cannot be unwrapped with key {key_id!r} (the vault was sealed with {expected!r})."
    recommendation = "Use the key-encryption key the vault was created with; a vault never opens with another key."


class DataKeyBindingMismatch(PreconditionFailed):
    code = "UserErrorDataKeyNotOfThisVault"
    message = "The wrapped data key is bound to {found}, not to vault {expected} version {version}: it was not unwrapped."
    recommendation = "A vault opens only with its own config; restore the vault's config object from a replica (GRS) or a copy if it was replaced."


class RepositoryAlreadyInitialised(Conflict):
    code = "UserErrorRepositoryAlreadyInitialised"
    message = "The storage at {location} already holds a Haven vault."
    recommendation = "Import the existing vault instead, or point the new vault to an empty container, bucket or folder."


class RepositoryNotInitialised(NotFound):
    code = "UserErrorRepositoryNotInitialised"
    message = "The storage at {location} holds no Haven vault."
    recommendation = "Check the storage URL; create the vault first if it is new."


class RepositoryFormatUnsupported(PreconditionFailed):
    code = "UserErrorRepositoryFormatUnsupported"
    message = "The vault uses storage format version {version}, which this Haven does not read."
    recommendation = "Upgrade Haven to a version that supports the vault's storage format."


class RepositoryLocked(Conflict):
    code = "UserErrorRepositoryLocked"
    message = "The vault is busy: {what} is running (lock {lock})."
    recommendation = "Wait until it finishes and retry; a lock left by a crashed process expires at {expires}."


class RecoveryPointNotFound(NotFound):
    code = "StorageErrorRecoveryPointNotFound"
    message = "Recovery point {point_id!r} of item {item_id!r} does not exist in the vault."
    recommendation = "List the item's recovery points to see which exist."


class RecoveryPointExists(Conflict):
    code = "UserErrorRecoveryPointExists"
    message = "Recovery point {point_id!r} of item {item_id!r} already exists."
    recommendation = "Use a new recovery point id."


class DiskNotFound(NotFound):
    code = "StorageErrorPointDiskNotFound"
    message = "Recovery point {point_id!r} has no disk named {disk!r} (it has: {disks})."
    recommendation = "Pick one of the disks the recovery point lists."


class InvalidStorageUrl(UserError):
    code = "UserErrorInvalidStorageUrl"
    message = "The storage URL {url!r} is not valid: {reason}."
    recommendation = "Use file:///abs/path, azure://<container>, s3://<bucket>/<prefix> or haven+https://host:port/<vault-id>."


class InvalidObjectName(UserError):
    code = "UserErrorInvalidObjectName"
    message = "{what} {name!r} is not a valid name in the vault."
    recommendation = "Use 1-128 characters: letters, digits, '.', '_' and '-', starting with a letter or digit."


class BackupCancelled(Conflict):
    code = "UserErrorBackupCancelled"
    message = "The backup of {item_id!r} was cancelled; no recovery point was recorded."
    recommendation = "Start the backup again when ready."


class SourceReadFailed(Transient):
    code = "StorageErrorSourceReadFailed"
    message = "Reading disk {disk!r} at offset {offset} failed: {detail}."
    recommendation = "Check the disk or snapshot on the host and retry the backup."


class RestoreTargetFailed(PreconditionFailed):
    code = "UserErrorRestoreTargetFailed"
    message = "Writing the restored disk to {path!r} failed: {detail}."
    recommendation = "Check the target folder exists, is writable and has enough free space."


class GcRefused(Transient):
    code = "StorageErrorGcRefused"
    message = "Garbage collection deleted nothing: {reason}."
    recommendation = "Nothing was lost. Check the storage endpoint (a listing that fails or comes back short), then run GC again."

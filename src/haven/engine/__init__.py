"""Haven's storage engine: deduplicated, compressed, encrypted chunks on a folder, Azure Blob,
S3 or Haven's own storage endpoint. The format is in docs/storage-format.md.

Typical use::

    backend = open_backend("file:///srv/haven/vaults/v1")
    repo = Repository.init(backend, LocalKeyWrapper(master_key), {"name": "v1"})
    repo.backup("vm-1", "p1", disks, meta={})
"""

from .backend import Backend, ObjectInfo
from .backup import BackupSummary, DiskSummary
from .errors import *  # noqa: F401,F403  (the engine's typed errors)
from .errors import __all__ as _errors
from .filesource import RawFileSource
from .format import DEFAULT_CHUNK_SIZE, DiskManifest, PointInfo, PointManifest
from .gc import GcReport
from .keys import KeyWrapper, LocalKeyWrapper, UnwrapFailed
from .local import LocalBackend
from .repository import Repository
from .restore import DiskReader, RestoreSummary
from .retry import RetryingBackend
from .source import DiskSource, Extent
from .urls import open_backend
from .verify import VerifyReport

__all__ = [
    "open_backend",
    "Repository",
    "LocalKeyWrapper",
    "KeyWrapper",
    "UnwrapFailed",
    "Backend",
    "ObjectInfo",
    "LocalBackend",
    "RetryingBackend",
    "DiskSource",
    "Extent",
    "RawFileSource",
    "BackupSummary",
    "DiskSummary",
    "RestoreSummary",
    "DiskReader",
    "PointInfo",
    "PointManifest",
    "DiskManifest",
    "VerifyReport",
    "GcReport",
    "DEFAULT_CHUNK_SIZE",
    *_errors,
]

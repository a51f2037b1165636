"""A vault in an Azure Blob storage container (``azure-storage-blob``; tested against Azurite)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from haven.errors import HavenError

from .backend import Backend, ObjectInfo, check_name, check_prefix
from .errors import StorageAccessDenied, StorageObjectNotFound, StorageRequestRejected, StorageTimeout, StorageUnavailable

__all__ = ["AzureBackend"]


def _convert(exc: Exception, op: str, name: str) -> Exception:
    if isinstance(exc, HavenError):
        return exc
    detail = f"{op} {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if isinstance(exc, ResourceNotFoundError) and op in ("load", "exists") and "ContainerNotFound" not in str(exc):
        return StorageObjectNotFound(name=name)
    if isinstance(exc, ClientAuthenticationError):
        return StorageAccessDenied(detail=detail)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in (401, 403):
            return StorageAccessDenied(detail=detail)
        if status in (408, 429) or status >= 500:
            return StorageUnavailable(detail=detail)
        return StorageRequestRejected(detail=detail)
    if isinstance(exc, ServiceResponseError) and "timed out" in str(exc).lower():
        return StorageTimeout(detail=detail)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StorageUnavailable(detail=detail)
    return StorageUnavailable(detail=detail)


class AzureBackend(Backend):
    """Objects are block blobs named ``<prefix>/<name>`` in one container."""

    def __init__(self, container: str, *, connection_string: str | None = None, account_url: str | None = None,
                 credential: Any = None, prefix: str = "", proxies: dict[str, str] | None = None,
                 connection_verify: bool | str = True, timeout: float = 60.0, sdk_retries: int = 2):
        kwargs: dict[str, Any] = dict(
            connection_verify=connection_verify, connection_timeout=min(timeout, 20.0), read_timeout=timeout,
            retry_total=sdk_retries, max_single_put_size=64 << 20, max_block_size=8 << 20,
        )
        if proxies:
            kwargs["proxies"] = proxies
        if connection_string:
            self._client = ContainerClient.from_connection_string(connection_string, container, **kwargs)
        elif account_url:
            self._client = ContainerClient(account_url, container, credential=credential, **kwargs)
        else:
            raise ValueError("azure backend needs connection_string= or account_url=")
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"azure://{container}/{self._prefix}"

    def _key(self, name: str) -> str:
        return self._prefix + check_name(name)

    def prepare(self) -> None:
        try:
            self._client.create_container()
        except ResourceExistsError:
            return
        except Exception as exc:
            raise _convert(exc, "create container", self.location) from exc

    def store(self, name: str, data: bytes) -> None:
        try:
            self._client.upload_blob(self._key(name), data, overwrite=True, length=len(data))
        except Exception as exc:
            raise _convert(exc, "store", name) from exc

    def load(self, name: str) -> bytes:
        try:
            return self._client.download_blob(self._key(name), max_concurrency=1).readall()
        except Exception as exc:
            raise _convert(exc, "load", name) from exc

    def exists(self, name: str) -> bool:
        try:
            return self._client.get_blob_client(self._key(name)).exists()
        except Exception as exc:
            raise _convert(exc, "exists", name) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        try:
            strip = len(self._prefix)
            found = [ObjectInfo(b.name[strip:], b.size, b.etag) for b in self._client.list_blobs(name_starts_with=self._prefix + prefix)]
        except Exception as exc:
            raise _convert(exc, "list", prefix) from exc
        return iter(found)

    def delete(self, name: str) -> None:
        try:
            self._client.delete_blob(self._key(name))
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise _convert(exc, "delete", name) from exc

    def close(self) -> None:
        self._client.close()

"""A vault in an S3 bucket (``boto3``; tested against ``rclone serve s3``, which checks signatures)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from haven.errors import HavenError, PreconditionFailed

from .backend import Backend, ObjectInfo, check_name, check_prefix
from .errors import (
    StorageAccessDenied,
    StorageObjectNotFound,
    StorageRequestRejected,
    StorageTimeout,
    StorageUnavailable,
    StorageVaultFull,
)

__all__ = ["S3Backend", "StorageCredentialsMissing"]


class StorageCredentialsMissing(PreconditionFailed):
    code = "UserErrorStorageCredentialsMissing"
    message = "No credentials are configured for the S3 storage {location} ({detail})."
    recommendation = ("Give the vault's region access_key_id and secret_access_key_file (or secret_access_key_env) under "
                      "[regions.storage] in haven.toml on the server (docs/guides/object-storage.md), then run 'haven prepare check'.")

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "401", "ExpiredToken", "InvalidToken"}
_MISSING = {"NoSuchKey", "404", "NotFound"}
#: out of space or over quota: Ceph RGW's QuotaExceeded (403), MinIO's XMinioStorageFull (507) and bucket quota,
#: and HTTP 507 Insufficient Storage from anything else
_FULL = {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "InsufficientStorage", "507"}
_TRANSIENT = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed", "500", "502", "503", "504"}


def _convert(exc: Exception, op: str, name: str, location: str = "s3") -> Exception:
    if isinstance(exc, HavenError):
        return exc
    detail = f"{op} {name}: {exc}"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING and op in ("load", "exists"):
            return StorageObjectNotFound(name=name)
        if code in _FULL or status == 507:
            return StorageVaultFull(detail=detail)
        if code in _DENIED or status in (401, 403):
            return StorageAccessDenied(detail=detail)
        if code in _TRANSIENT or status >= 500 or status in (408, 429):
            return StorageUnavailable(detail=detail)
        return StorageRequestRejected(detail=detail)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageCredentialsMissing(location=location, detail=str(exc))
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return StorageTimeout(detail=detail)
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(detail=detail)
    return StorageUnavailable(detail=detail)


class S3Backend(Backend):
    """Objects are keys ``<prefix>/<name>`` in one bucket (path-style addressing unless ``addressing_style`` says otherwise).

    Without ``access_key``/``secret_key`` boto3 looks for credentials itself (``AWS_*`` variables, its files)."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, session_token: str | None = None, region: str | None = None,
                 addressing_style: str = "path", proxies: dict[str, str] | None = None,
                 verify: bool | str = True, timeout: float = 60.0, sdk_retries: int = 2):
        cfg = Config(
            proxies=proxies or None, connect_timeout=min(timeout, 20.0), read_timeout=timeout,
            retries={"max_attempts": sdk_retries + 1, "mode": "standard"}, signature_version="s3v4",
            s3={"addressing_style": addressing_style}, max_pool_connections=16,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        self._s3 = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            aws_session_token=session_token, region_name=region or "us-east-1", config=cfg, verify=verify,
        )
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self._prefix}"

    def _key(self, name: str) -> str:
        return self._prefix + check_name(name)

    def prepare(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                raise _convert(exc, "head bucket", self.bucket, self.location) from exc
        except Exception as exc:
            raise _convert(exc, "head bucket", self.bucket, self.location) from exc
        try:
            self._s3.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _convert(exc, "create bucket", self.bucket, self.location) from exc
        except Exception as exc:
            raise _convert(exc, "create bucket", self.bucket, self.location) from exc

    def store(self, name: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except Exception as exc:
            raise _convert(exc, "store", name, self.location) from exc

    def load(self, name: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except Exception as exc:
            raise _convert(exc, "load", name, self.location) from exc

    def exists(self, name: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except Exception as exc:
            err = _convert(exc, "exists", name, self.location)
            if isinstance(err, StorageObjectNotFound):
                return False
            raise err from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip, prefix = len(self._prefix), check_prefix(prefix)
        try:
            found = []
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._prefix + prefix):
                found.extend(ObjectInfo(o["Key"][strip:], int(o["Size"]), o.get("ETag")) for o in page.get("Contents", []))
        except Exception as exc:
            raise _convert(exc, "list", prefix, self.location) from exc
        return iter(found)

    def delete(self, name: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return
            raise _convert(exc, "delete", name, self.location) from exc
        except Exception as exc:
            raise _convert(exc, "delete", name, self.location) from exc

    def close(self) -> None:
        self._s3.close()

"""``open_backend(url, **options)``: from a vault's storage URL to a (retrying) backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

from .backend import Backend
from .errors import InvalidStorageUrl
from .retry import RetryingBackend

__all__ = ["open_backend"]


def open_backend(url: str, *, retry: bool = True, retry_attempts: int = 5, **options: Any) -> Backend:
    """Open the backend a storage URL names, wrapped in ``RetryingBackend`` unless ``retry=False``.

    ``file:///abs/path``                          local folder (``fsync=``)
    ``azure://<container>``                       ``connection_string=`` (or ``account_url=`` + ``credential=``, e.g.
                                                  ``{"account_name": …, "account_key": …}``),
                                                  ``proxies=``, ``connection_verify=``, ``prefix=``
    ``s3://<bucket>[/<prefix>]``                  ``endpoint_url=``, ``access_key=``, ``secret_key=``, ``session_token=``,
                                                  ``region=``, ``addressing_style=``, ``proxies=``, ``verify=``
    ``haven+http(s)://host:port/<vault-id>``      Haven's storage endpoint: ``token=``, ``proxies=``, ``verify=``
    """
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    backend: Backend
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise InvalidStorageUrl(url=url, reason="a file URL needs an absolute path (file:///abs/path)")
        from .local import LocalBackend

        backend = LocalBackend(unquote(parsed.path), **options)
    elif scheme == "azure":
        if not parsed.netloc:
            raise InvalidStorageUrl(url=url, reason="the container name is missing (azure://<container>)")
        from .azure import AzureBackend

        prefix = parsed.path.strip("/")
        backend = AzureBackend(parsed.netloc, prefix=options.pop("prefix", prefix), **options)
    elif scheme == "s3":
        if not parsed.netloc:
            raise InvalidStorageUrl(url=url, reason="the bucket name is missing (s3://<bucket>/<prefix>)")
        from .s3 import S3Backend

        backend = S3Backend(parsed.netloc, prefix=parsed.path.strip("/"), **options)
    elif scheme in ("haven+http", "haven+https"):
        vault = parsed.path.strip("/")
        if not parsed.netloc or not vault or "/" in vault:
            raise InvalidStorageUrl(url=url, reason="use haven+https://host:port/<vault-id>")
        from .http import HttpBackend

        base = f"{scheme.split('+', 1)[1]}://{parsed.netloc}"
        backend = HttpBackend(base, vault, **options)
    else:
        raise InvalidStorageUrl(url=url, reason=f"unknown scheme {scheme!r}")
    return RetryingBackend(backend, attempts=retry_attempts) if retry else backend

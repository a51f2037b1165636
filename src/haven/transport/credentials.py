"""A region's object-storage settings (``[regions.storage]`` in ``haven.toml``) as backend options.

``storage_options(storage)`` reads each secret from its file or environment variable *when the storage
is opened* and answers the options ``open_backend`` takes (S3: ``endpoint_url``, ``region``,
``addressing_style``, ``access_key``, ``secret_key``; Azure Blob: ``connection_string``, or
``account_url`` + ``credential``), plus ``credentials_from``: a description of where they come from,
without any secret, that :func:`credentials_error` names when the storage refuses them.

Secrets never leave as text: the host's backend (``haven.transport.backend.ProxyAwareBackend``) passes every
error through :func:`credentials_error`, which removes every secret value; :func:`scrub` does the same for any text.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from haven.config import RegionConfig, RegionStorage, SecretSource
from haven.engine.errors import StorageAccessDenied
from haven.errors import HavenError
from haven.transport.errors import StorageCredentialsRejected, StorageSecretUnreadable

__all__ = ["storage_options", "region_for_url", "credentials_error", "secret_values", "scrub", "CREDENTIALS_FROM",
           "SECRET_OPTIONS"]

#: the option that says where the credentials come from (popped before the backend is opened)
CREDENTIALS_FROM = "credentials_from"
#: backend options that hold secrets
SECRET_OPTIONS = ("secret_key", "session_token", "connection_string", "credential")
_MASK = "***"


def _read(storage: RegionStorage, source: SecretSource, env: Mapping[str, str]) -> str:
    where = f"the file {source.file}" if source.file else f"the environment variable {source.env}"

    def unreadable(reason: str) -> StorageSecretUnreadable:
        return StorageSecretUnreadable(key=source.key, region=storage.region, source=where, reason=reason)

    if source.file:
        try:
            value = Path(source.file).expanduser().read_text().strip()
        except FileNotFoundError:
            raise unreadable("it does not exist") from None
        except OSError as exc:
            raise unreadable(exc.strerror or type(exc).__name__) from None
        except UnicodeDecodeError:
            raise unreadable("it is not text") from None
    else:
        value = (env.get(source.env or "") or "").strip()
        if not value:
            raise unreadable("it is not set in the server's environment")
    if not value:
        raise unreadable("it is empty")
    if "\n" in value and source.key != "connection_string":
        raise unreadable("it holds more than one line")
    return value


def storage_options(storage: RegionStorage, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The backend options of ``storage``, secrets read now (typed :class:`StorageSecretUnreadable` if one cannot be)."""
    env = os.environ if env is None else env
    secret = {s.key: _read(storage, s, env) for s in storage.secrets}
    sources = ", ".join(s.describe() for s in storage.secrets) or "no secret"
    opts: dict[str, Any] = {CREDENTIALS_FROM: {"region": storage.region, "settings": f"{sources} in {storage.where}"}}
    if storage.kind == "s3":
        for key, option in (("endpoint_url", "endpoint_url"), ("region", "region"), ("addressing_style", "addressing_style"),
                            ("access_key_id", "access_key")):
            if storage.get(key):
                opts[option] = storage.get(key)
        for key, option in (("secret_access_key", "secret_key"), ("session_token", "session_token")):
            if key in secret:
                opts[option] = secret[key]
        return opts
    if "connection_string" in secret:
        opts["connection_string"] = secret["connection_string"]
        return opts
    account, key = storage.get("account_name") or "", secret.get("account_key", "")
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        source = storage.secret("account_key")
        raise StorageSecretUnreadable(key="account_key", region=storage.region, reason="it is not a base64 account key",
                                      source=f"the file {source.file}" if source and source.file else
                                      f"the environment variable {source.env if source else '?'}") from None
    opts["account_url"] = storage.get("endpoint_url") or f"https://{account}.blob.core.windows.net"
    opts["credential"] = {"account_name": account, "account_key": key}
    return opts


def region_for_url(regions: Iterable[RegionConfig], storage_url: str) -> RegionConfig | None:
    """The region a storage URL lies in: the longest region ``storage_url`` it starts with, else the one region
    with the same scheme and bucket or container (a vault made before the region's prefix changed)."""
    url = storage_url.rstrip("/")
    regions = list(regions)
    inside = [r for r in regions if url == r.storage_url.rstrip("/") or url.startswith(r.storage_url.rstrip("/") + "/")]
    if inside:
        return max(inside, key=lambda r: len(r.storage_url))
    p = urlparse(url)
    same = [r for r in regions if (lambda q: (q.scheme, q.netloc) == (p.scheme, p.netloc))(urlparse(r.storage_url))]
    return same[0] if len(same) == 1 else None


def secret_values(options: Mapping[str, Any]) -> list[str]:
    """The secret strings among backend options (longest first, so a key inside a connection string goes with it)."""
    found: list[str] = []
    for key in SECRET_OPTIONS:
        value = options.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            found.extend(str(v) for k, v in value.items() if k != "account_name" and v)
    if isinstance(options.get("connection_string"), str):
        for part in options["connection_string"].split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
                found.append(value)
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        text = text.replace(s, _MASK)
    return text


def _scrubbed(exc: HavenError, secrets: list[str]) -> HavenError:
    fields = {k: scrub(v, secrets) if isinstance(v, str) else v for k, v in exc.fields.items()}
    text, fix = scrub(exc.text, secrets), scrub(exc.fix, secrets)
    if text == exc.text and fix == exc.fix and fields == exc.fields:
        return exc
    return type(exc)(text, fix, **fields)


def credentials_error(exc: HavenError, location: str, credentials_from: Mapping[str, str] | None,
                      secrets: list[str]) -> HavenError:
    """``exc`` as the user must see it: refused credentials name the region's settings, and no text holds a secret."""
    new = exc
    if isinstance(exc, StorageAccessDenied) and credentials_from:
        new = StorageCredentialsRejected(region=credentials_from.get("region", "?"), location=location,
                                         settings=credentials_from.get("settings", "haven.toml"),
                                         detail=exc.fields.get("detail", exc.text))
    return _scrubbed(new, secrets) if secrets else new

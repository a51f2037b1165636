"""Client of Haven's own storage endpoint (``haven+https://host:port/<vault-id>``).

The server side is ``haven.api.storage_endpoint``. Wire protocol (all under
``/storage/v1/vaults/<vault-id>``, ``Authorization: Bearer <token>``; Haven's own server takes
only a job's storage capability there and refuses what the job may not do, see
``haven.engine.grant``):

``PUT    /objects/<name>``   body = object bytes, header ``X-Haven-Blake3`` = hex BLAKE3 of the body → 204
``GET    /objects/<name>``   → 200 bytes | 404
``HEAD   /objects/<name>``   → 200 | 404
``DELETE /objects/<name>``   → 204 (also when missing)
``GET    /objects?prefix=p`` → 200 ``{"objects": [{"name": …, "size": …}]}``
``POST   /prepare``          → 204

Errors come back as Haven's JSON error payload with the category's status code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import blake3
import httpx

from .backend import Backend, ObjectInfo, check_name, check_prefix
from .errors import (
    StorageAccessDenied,
    StorageObjectNotFound,
    StorageRequestRejected,
    StorageTimeout,
    StorageUnavailable,
    StorageVaultFull,
)

__all__ = ["HttpBackend", "API_PREFIX", "CHECKSUM_HEADER"]

API_PREFIX = "/storage/v1/vaults"
CHECKSUM_HEADER = "X-Haven-Blake3"


def _transport_args(proxies: dict[str, str] | str | None, verify: bool | str) -> dict[str, Any]:
    if not proxies:
        return {"verify": verify}
    if isinstance(proxies, str):
        return {"verify": verify, "proxy": proxies}
    mounts = {f"{scheme}://": httpx.HTTPTransport(proxy=url, verify=verify) for scheme, url in proxies.items() if url}
    return {"verify": verify, "mounts": mounts}


class HttpBackend(Backend):
    """Objects live in a folder vault on a Haven server, reached over HTTP(S) with a bearer token."""

    def __init__(self, base_url: str, vault_id: str, *, token: str | None = None, proxies: dict[str, str] | str | None = None,
                 verify: bool | str = True, timeout: float = 60.0):
        self.vault_id = vault_id
        self.location = f"haven+{base_url}/{vault_id}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=f"{base_url.rstrip('/')}{API_PREFIX}/{vault_id}", headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=min(timeout, 20.0)), trust_env=False,
                                    **_transport_args(proxies, verify))

    def _request(self, method: str, path: str, name: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise StorageTimeout(detail=f"{method} {name}: {exc}") from exc
        except httpx.TransportError as exc:
            raise StorageUnavailable(detail=f"{method} {name}: {exc}") from exc
        if resp.status_code < 400:
            return resp
        code = _error_text(resp)
        detail = f"{method} {name}: HTTP {resp.status_code} {code}"
        if code == StorageVaultFull.code:  # the server's disk is full: say so, never "unreachable"
            raise StorageVaultFull(detail=detail)
        if resp.status_code == 404 and method in ("GET", "HEAD") and path.startswith("/objects/"):
            raise StorageObjectNotFound(name=name)
        if resp.status_code in (401, 403, 407):
            raise StorageAccessDenied(detail=detail)
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise StorageUnavailable(detail=detail)
        raise StorageRequestRejected(detail=detail)

    def prepare(self) -> None:
        self._request("POST", "/prepare", "prepare")

    def store(self, name: str, data: bytes) -> None:
        headers = {CHECKSUM_HEADER: blake3.blake3(data).hexdigest(), "Content-Type": "application/octet-stream"}
        self._request("PUT", f"/objects/{check_name(name)}", name, content=data, headers=headers)

    def load(self, name: str) -> bytes:
        resp = self._request("GET", f"/objects/{check_name(name)}", name)
        want = resp.headers.get(CHECKSUM_HEADER)
        if want and blake3.blake3(resp.content).hexdigest() != want:
            raise StorageUnavailable(detail=f"GET {name}: body does not match its checksum")
        return resp.content

    def exists(self, name: str) -> bool:
        try:
            self._request("HEAD", f"/objects/{check_name(name)}", name)
            return True
        except StorageObjectNotFound:
            return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        resp = self._request("GET", "/objects", prefix, params={"prefix": check_prefix(prefix)})
        try:
            return iter([ObjectInfo(o["name"], int(o["size"]), o.get("version")) for o in resp.json()["objects"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageUnavailable(detail=f"list {prefix}: malformed answer") from exc

    def delete(self, name: str) -> None:
        self._request("DELETE", f"/objects/{check_name(name)}", name)

    def close(self) -> None:
        self._client.close()


def _error_text(resp: httpx.Response) -> str:
    try:
        return resp.json()["error"]["code"]
    except Exception:
        return resp.reason_phrase

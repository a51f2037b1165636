"""The storage endpoint's use case: raw vault objects for the holder of a storage credential.

The HTTP half (``haven.api.storage_endpoint``) only moves bytes and headers; what a credential may
touch, the checks on names and prefixes, the size cap of an object kind and the end-to-end checksum
are decided here. ``resolve(token, vault_id)`` authenticates a bearer token and returns the
``Backend`` it may use (Haven's own resolver, ``services.capabilities``, answers a job's capability
with a ``GrantedBackend``); tests hand in their own resolver.
"""

from __future__ import annotations

from collections.abc import Callable

import blake3

from haven.engine.backend import Backend, ObjectInfo, check_name, check_prefix
from haven.engine.errors import StorageObjectNotFound, StorageUnavailable
from haven.engine.grant import GrantedBackend
from haven.engine.http import API_PREFIX, CHECKSUM_HEADER
from haven.errors import TooLarge

__all__ = ["API_PREFIX", "CHECKSUM_HEADER", "MAX_OBJECT", "ObjectService", "ObjectSession", "Resolver",
           "StorageObjectTooLarge", "checksum"]

Resolver = Callable[[str, str], Backend]
MAX_OBJECT = 256 << 20


class StorageObjectTooLarge(TooLarge):
    code = "UserErrorStorageObjectTooLarge"
    message = "The object {name!r} is larger than the {limit} bytes this storage endpoint takes for it{size}."
    recommendation = "Nothing was stored. Send objects within the limit (a Haven agent's chunks and manifests always are; check the agent's version)."


def checksum(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


class ObjectSession:
    """One request's view of one vault, resolved once from the caller's credential."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def store_limit(self, name: str) -> int:
        """The largest body this credential may store under ``name``: known from the name alone, so a
        request is refused before its body is read."""
        check_name(name)
        backend = self._backend
        limit = backend.store_limit(name) if isinstance(backend, GrantedBackend) else MAX_OBJECT
        return min(limit, MAX_OBJECT)

    def store(self, name: str, body: bytes, want: str | None) -> None:
        check_name(name)
        if want and checksum(body) != want:
            raise StorageUnavailable(detail=f"body of {name} does not match its checksum")
        self._backend.store(name, body)

    def load(self, name: str) -> tuple[bytes, str]:
        data = self._backend.load(check_name(name))
        return data, checksum(data)

    def require(self, name: str) -> None:
        if not self._backend.exists(check_name(name)):
            raise StorageObjectNotFound(name=name)

    def delete(self, name: str) -> None:
        self._backend.delete(check_name(name))

    def list(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        return list(self._backend.list(prefix))

    def prepare(self) -> None:
        self._backend.prepare()


class ObjectService:
    def __init__(self, resolve: Resolver):
        self._resolve = resolve

    def open(self, token: str, vault_id: str) -> ObjectSession:
        return ObjectSession(self._resolve(token, vault_id))

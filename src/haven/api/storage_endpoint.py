"""Haven's storage endpoint, server side: serves folder vaults over HTTP to host agents.

``storage_router(resolve)`` returns a FastAPI ``APIRouter``; mount it on the app as is (its
paths start with ``/storage/v1/vaults/{vault_id}``). ``resolve(token, vault_id)`` authenticates
the bearer token and returns the ``Backend`` that this token may use for that vault; it raises
``Unauthenticated`` / ``Forbidden`` / ``NotFound`` otherwise. Haven's own resolver
(``services.capabilities``) answers a job's capability with a ``GrantedBackend``, which decides
what may be written or deleted. The wire protocol is documented in ``haven.engine.http``.

Every request is resolved (authenticated and authorized) before its body is read; a PUT whose
``Content-Length`` is above the cap is refused unread, and a body without one is capped while it
streams in (``StorageObjectTooLarge``, 413). Names and listing prefixes pass ``check_name`` /
``check_prefix`` here and again in the backend.
"""

from __future__ import annotations

from collections.abc import Callable

import blake3
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from haven.engine.backend import Backend, check_name, check_prefix
from haven.engine.errors import StorageObjectNotFound, StorageUnavailable
from haven.engine.grant import GrantedBackend
from haven.engine.http import API_PREFIX, CHECKSUM_HEADER
from haven.errors import HavenError, TooLarge, Unauthenticated, UserError

__all__ = ["storage_router", "Resolver", "StorageObjectTooLarge", "MAX_OBJECT"]

Resolver = Callable[[str, str], Backend]
MAX_OBJECT = 256 << 20


class StorageObjectTooLarge(TooLarge):
    code = "UserErrorStorageObjectTooLarge"
    message = "The object {name!r} is larger than the {limit} bytes this storage endpoint takes for it{size}."
    recommendation = "Nothing was stored. Send objects within the limit (a Haven agent's chunks and manifests always are; check the agent's version)."


async def _body(request: Request, name: str, limit: int) -> bytes:
    """The request body, refused before reading when its Content-Length is above ``limit`` and cut off
    as soon as a streamed (chunked) body passes it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise UserError(f"The Content-Length {declared[:32]!r} is not a number.", "Send a valid Content-Length header.")
        if int(declared) > limit:
            raise StorageObjectTooLarge(name=name, limit=limit, size=f" (it declares {int(declared)})")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise StorageObjectTooLarge(name=name, limit=limit, size="")
    return bytes(body)


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated()
    return token.strip()


def _error(exc: HavenError) -> JSONResponse:
    return JSONResponse(exc.to_payload(), status_code=exc.http_status)


def storage_router(resolve: Resolver) -> APIRouter:
    """The router serving ``/storage/v1/vaults/{vault_id}/…`` from the backends ``resolve`` hands out."""
    router = APIRouter(prefix=API_PREFIX + "/{vault_id}", tags=["storage endpoint"])

    async def backend_for(request: Request, vault_id: str) -> Backend:
        return await run_in_threadpool(resolve, _token(request), vault_id)

    async def guarded(fn):
        try:
            return await fn()
        except HavenError as exc:
            return _error(exc)

    @router.put("/objects/{name:path}", status_code=204, summary="Store an object")
    async def put_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            check_name(name)
            # what a capability may write is known from the name alone: refuse before reading the body
            limit = await run_in_threadpool(backend.store_limit, name) if isinstance(backend, GrantedBackend) else MAX_OBJECT
            body = await _body(request, name, min(limit, MAX_OBJECT))
            want = request.headers.get(CHECKSUM_HEADER)
            if want and blake3.blake3(body).hexdigest() != want:
                raise StorageUnavailable(detail=f"body of {name} does not match its checksum")
            await run_in_threadpool(backend.store, name, body)
            return Response(status_code=204)

        return await guarded(run)

    @router.get("/objects/{name:path}", summary="Load an object")
    async def get_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            data = await run_in_threadpool(backend.load, check_name(name))
            return Response(data, media_type="application/octet-stream", headers={CHECKSUM_HEADER: blake3.blake3(data).hexdigest()})

        return await guarded(run)

    @router.head("/objects/{name:path}", summary="Whether an object exists")
    async def head_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            if not await run_in_threadpool(backend.exists, check_name(name)):
                raise StorageObjectNotFound(name=name)
            return Response(status_code=200)

        return await guarded(run)

    @router.delete("/objects/{name:path}", status_code=204, summary="Delete an object")
    async def delete_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            await run_in_threadpool(backend.delete, check_name(name))
            return Response(status_code=204)

        return await guarded(run)

    @router.get("/objects", summary="List objects by prefix")
    async def list_objects(vault_id: str, request: Request, prefix: str = "") -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            check_prefix(prefix)
            objs = await run_in_threadpool(lambda: [{"name": o.name, "size": o.size} for o in backend.list(prefix)])
            return JSONResponse({"objects": objs})

        return await guarded(run)

    @router.post("/prepare", status_code=204, summary="Create the vault folder if missing")
    async def prepare(vault_id: str, request: Request) -> Response:
        async def run():
            backend = await backend_for(request, vault_id)
            await run_in_threadpool(backend.prepare)
            return Response(status_code=204)

        return await guarded(run)

    return router

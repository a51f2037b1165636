"""Haven's storage endpoint, server side: serves folder vaults over HTTP to host agents.

``storage_router(objects)`` returns a FastAPI ``APIRouter``; mount it on the app as is (its
paths start with ``/storage/v1/vaults/{vault_id}``). ``objects`` is the use case
(``haven.services.objects.ObjectService``): it resolves the bearer token to what that credential
may do with that vault (``Unauthenticated`` / ``Forbidden`` / ``NotFound`` otherwise) and checks
every name. The wire protocol is documented in ``haven.engine.http``.

Every request is resolved (authenticated and authorized) before its body is read; a PUT whose
``Content-Length`` is above the cap is refused unread, and a body without one is capped while it
streams in (``StorageObjectTooLarge``, 413). Names and listing prefixes pass ``check_name`` /
``check_prefix`` here and again in the backend.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from haven.errors import HavenError, Unauthenticated, UserError
from haven.services.objects import API_PREFIX, CHECKSUM_HEADER, ObjectService, ObjectSession, StorageObjectTooLarge

__all__ = ["storage_router"]


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


def storage_router(objects: ObjectService) -> APIRouter:
    """The router serving ``/storage/v1/vaults/{vault_id}/…`` through ``objects``."""
    router = APIRouter(prefix=API_PREFIX + "/{vault_id}", tags=["storage endpoint"])

    async def session(request: Request, vault_id: str) -> ObjectSession:
        return await run_in_threadpool(objects.open, _token(request), vault_id)

    async def guarded(fn):
        try:
            return await fn()
        except HavenError as exc:
            return _error(exc)

    @router.put("/objects/{name:path}", status_code=204, summary="Store an object")
    async def put_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            vault = await session(request, vault_id)
            limit = await run_in_threadpool(vault.store_limit, name)
            body = await _body(request, name, limit)
            await run_in_threadpool(vault.store, name, body, request.headers.get(CHECKSUM_HEADER))
            return Response(status_code=204)

        return await guarded(run)

    @router.get("/objects/{name:path}", summary="Load an object")
    async def get_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            vault = await session(request, vault_id)
            data, digest = await run_in_threadpool(vault.load, name)
            return Response(data, media_type="application/octet-stream", headers={CHECKSUM_HEADER: digest})

        return await guarded(run)

    @router.head("/objects/{name:path}", summary="Whether an object exists")
    async def head_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            vault = await session(request, vault_id)
            await run_in_threadpool(vault.require, name)
            return Response(status_code=200)

        return await guarded(run)

    @router.delete("/objects/{name:path}", status_code=204, summary="Delete an object")
    async def delete_object(vault_id: str, name: str, request: Request) -> Response:
        async def run():
            vault = await session(request, vault_id)
            await run_in_threadpool(vault.delete, name)
            return Response(status_code=204)

        return await guarded(run)

    @router.get("/objects", summary="List objects by prefix")
    async def list_objects(vault_id: str, request: Request, prefix: str = "") -> Response:
        async def run():
            vault = await session(request, vault_id)
            objs = await run_in_threadpool(lambda: [{"name": o.name, "size": o.size, "version": o.version} for o in vault.list(prefix)])
            return JSONResponse({"objects": objs})

        return await guarded(run)

    @router.post("/prepare", status_code=204, summary="Create the vault folder if missing")
    async def prepare(vault_id: str, request: Request) -> Response:
        async def run():
            vault = await session(request, vault_id)
            await run_in_threadpool(vault.prepare)
            return Response(status_code=204)

        return await guarded(run)

    return router

"""Body limits, enforced before the application reads a byte: an ASGI middleware.

Every request outside ``/storage/v1`` (which caps its own objects) has a body cap: 1 MiB for JSON
and forms, more only where a route needs it (``ROUTE_CAPS``). A ``Content-Length`` above the cap is
answered 413 without reading the body; a body without one (chunked) is counted as it streams and
refused with 413 the moment it passes the cap. A request to a route that needs credentials and has
none that look valid (``/api/v1``: a ``Bearer hvn_…`` header; ``/ui``: the session cookie) is handed
to the application with an empty body: its own authentication refuses it, and nothing was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haven.errors import TooLarge

__all__ = ["BodyLimits", "RequestTooLarge", "DEFAULT_CAP", "ROUTE_CAPS", "RouteCap"]

MiB = 1 << 20
DEFAULT_CAP = 1 * MiB


class RequestTooLarge(TooLarge):
    code = "UserErrorRequestTooLarge"
    message = "The request body is larger than {path} accepts ({limit} bytes at most); it was refused without being read."
    recommendation = "Send a body of at most {limit} bytes: keep names, definitions and lists short, or split the request."


@dataclass(frozen=True)
class RouteCap:
    pattern: re.Pattern[str]
    limit: int


def _cap(pattern: str, limit: int) -> RouteCap:
    return RouteCap(re.compile(pattern), limit)


#: Routes that need more (or less) than the default; first match wins.
ROUTE_CAPS: tuple[RouteCap, ...] = (
    _cap(r"^/ui/signin$", 16 << 10),  # a token and a few hidden fields
    _cap(r"^/api/v1/agent/vms$", 16 * MiB),  # a host's whole inventory, with each VM's definition
    _cap(r"^/api/v1/agent/jobs/[^/]+/(complete|fail|progress)$", 4 * MiB),  # a job's result, warnings and errors
)
#: Left to the storage endpoint, which caps each object itself.
UNCAPPED_PREFIXES = ("/storage/v1/",)
#: Prefixes whose routes all need credentials (bar the exceptions below).
CREDENTIALED_PREFIXES = ("/api/v1/", "/ui/")
ANONYMOUS_ROUTES = re.compile(r"^/ui/(signin$|static/)")
SESSION_COOKIE = "haven_session"


def cap_for(path: str) -> int | None:
    """The body cap of a path in bytes, or None when this middleware leaves the path alone."""
    if path.startswith(UNCAPPED_PREFIXES):
        return None
    for rule in ROUTE_CAPS:
        if rule.pattern.match(path):
            return rule.limit
    return DEFAULT_CAP


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def has_credentials(scope: Scope) -> bool:
    """True when the request carries something that could be a credential for its route (not checked here)."""
    path = scope["path"]
    if not path.startswith(CREDENTIALED_PREFIXES) or ANONYMOUS_ROUTES.match(path):
        return True
    if path.startswith("/api/v1/"):
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and token.strip().startswith("hvn_") and len(token) <= 200
    cookie = SimpleCookie()
    try:
        cookie.load(_header(scope, b"cookie") or "")
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no credential
        return False
    morsel = cookie.get(SESSION_COOKIE)
    return morsel is not None and 0 < len(morsel.value) <= 200


class BodyLimits:
    """The ASGI middleware; wrap the whole application with it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = cap_for(scope["path"])
        if limit is None:
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return await _refuse(send, scope["path"], limit)
        if not has_credentials(scope):
            return await self.app(scope, _empty_body(receive), send)

        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True  # the application sees a disconnect; the client gets the 413 below
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever the application answers to the cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _refuse(send, scope["path"], limit)


def _empty_body(receive: Receive) -> Receive:
    delivered = False

    async def empty() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()  # only a disconnect listener asks again; the body's chunks are dropped

    return empty


async def _refuse(send: Send, path: str, limit: int) -> None:
    import json

    err = RequestTooLarge(path=path, limit=limit)
    body = json.dumps(err.to_payload()).encode()
    await send({"type": "http.response.start", "status": err.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

"""Security headers on every answer: an ASGI middleware.

The dashboard (``/ui``) gets a Content-Security-Policy that allows only its own files (no inline
script or style, no framing, forms post only to itself); the API and the storage endpoint answer
JSON or bytes and forbid everything; the API's documentation pages (``/docs``, ``/redoc``, which
load Swagger's scripts) only forbid framing. Every answer says ``nosniff`` and sends a Referer only
to this server (the dashboard's origin check on posts relies on browsers sending Origin).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "DASHBOARD_CSP", "API_CSP"]

DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                 "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_CSP = "frame-ancestors 'none'"

_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


def _csp(path: str) -> str:
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return DASHBOARD_CSP
    if path.startswith(("/docs", "/redoc")):
        return DOCS_CSP
    return API_CSP


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [*_COMMON, (b"content-security-policy", _csp(scope["path"]).encode())]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", ())}
                message = {**message, "headers": [*message.get("headers", ()), *(h for h in extra if h[0] not in names)]}
            await send(message)

        await self.app(scope, receive, with_headers)

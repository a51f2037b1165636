"""Maps errors to HTTP answers: every error body is ``{"error": {code, message, recommendation, details}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from haven.api.schemas import ErrorBody
from haven.db.session import database_error
from haven.errors import HavenError, InternalError, UserError

__all__ = ["install_error_handlers", "reject_nul_in_urls", "ERROR_RESPONSES", "RequestInvalid"]

log = logging.getLogger(__name__)


class RequestInvalid(UserError):
    code = "UserErrorInvalidRequest"
    message = "The request is invalid: {problems}"
    recommendation = "Fix the fields named above; the API's OpenAPI document (/openapi.json) describes every body and parameter."


_STATUS_TEXT = {
    400: "Invalid request: the error names the field and the fix",
    401: "Missing, unknown or expired token",
    403: "The caller's role does not allow this",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the current state",
    422: "Invalid request body or parameters",
}
ERROR_RESPONSES: dict = {code: {"description": text, "model": ErrorBody} for code, text in _STATUS_TEXT.items()}


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _allowed_methods(request: Request) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods - {"HEAD"}) if methods != {"HEAD"} else sorted(methods)


def _page_holding(request: Request) -> str:
    """The nearest ancestor of a dashboard form's address that is a page (answers GET)."""
    from starlette.routing import Match

    path = request.url.path.rstrip("/")
    while path.count("/") > 1:
        path = path.rsplit("/", 1)[0]
        scope = {**request.scope, "method": "GET", "path": path}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            return path
    return "/ui/"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HavenError)
    async def _haven(request: Request, exc: HavenError):
        if exc.http_status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(exc.to_payload(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = RequestInvalid(problems=_describe(exc.errors()))
        return JSONResponse(err.to_payload(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405 and request.method == "GET" and request.url.path.startswith("/ui/"):
            # a form's address opened in the browser (a bookmark, a reload): back to the page that holds the form
            return RedirectResponse(_page_holding(request), status_code=303)
        cls = {404: "UserErrorNotFound", 405: "UserErrorMethodNotAllowed"}.get(exc.status_code, "UserErrorInvalidRequest")
        body = {"error": {"code": cls, "message": str(exc.detail), "recommendation": "See /docs for the API's routes and methods.", "details": {}}}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; FastAPI has one route per method.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        lost = database_error(exc)
        if lost is not None:
            return JSONResponse(lost.to_payload(), status_code=lost.http_status)
        return JSONResponse(InternalError().to_payload(), status_code=500)


def reject_nul_in_urls(app: FastAPI) -> None:
    """A NUL character in a path or query is never a valid name (PostgreSQL cannot even store it): 400."""
    from urllib.parse import unquote

    @app.middleware("http")
    async def _no_nul(request: Request, call_next):
        if "\x00" in request.url.path or "\x00" in unquote(request.url.query or ""):
            err = RequestInvalid(problems="the path or query contains a NUL character")
            return JSONResponse(err.to_payload(), status_code=400)
        return await call_next(request)

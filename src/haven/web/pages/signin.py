"""Sign-in and sign-out: a pre-session cookie and its CSRF token, then a server-side session."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from haven.errors import HavenError
from haven.web.session import (
    COOKIE,
    COOKIE_PATH,
    PRESESSION_COOKIE,
    check_csrf,
    check_signin_csrf,
    new_presession,
    reason_text,
    session_secret,
    signin_csrf,
)
from haven.web.pages.base import _refusal, _refuse, _render, form_page, router

# ------------------------------------------------------------------ sign-in


@router.get("/signin")
def signin_page(request: Request, next: str = "/ui/", reason: str | None = None):
    refused = _refusal(request, "signin")
    error = refused.error if refused and refused.where == "signin" else None
    return _signin_form(request, next=_safe_next(next), reason=None if error else reason_text(reason), error=error)


def _signin_form(request: Request, status: int = 200, **ctx) -> HTMLResponse:
    """The sign-in form, with a fresh pre-session cookie and the CSRF token bound to it."""
    presession = new_presession()
    resp = _render(request, "signin.html", None, status=status, signin_csrf=signin_csrf(request, presession), **ctx)
    resp.set_cookie(PRESESSION_COOKIE, presession, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path="/ui/signin", max_age=3600)
    return resp


@router.post("/signin")
@form_page(lambda request: "/ui/signin")
def signin(request: Request, token: str = Form(""), next: str = Form("/ui/"), csrf: str = Form("")):
    core = request.app.state.core
    check_signin_csrf(request, csrf)  # a forged sign-in changes nothing: the browser keeps its session
    try:
        started = core.web_sessions.start(token.strip())
    except HavenError as e:
        # back to the form (303), never with the token typed: a reload shows the error and posts nothing
        return _refuse(request, "/ui/signin?" + urlencode({"next": _safe_next(next)}), [e], "signin")
    core.web_sessions.end(session_secret(request))  # the session this browser had before, if any
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, started.secret, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path=COOKIE_PATH, max_age=max(1, int((started.expires_at - core.clock.now()).total_seconds())))
    resp.delete_cookie(PRESESSION_COOKIE, path="/ui/signin")
    resp.delete_cookie(COOKIE, path="/")  # a cookie of earlier versions, which held the token itself
    return resp


@router.post("/signout")
@form_page(lambda request: "/ui/")
def signout(request: Request, csrf: str = Form("")):
    check_csrf(request, csrf)
    request.app.state.core.web_sessions.end(session_secret(request))
    resp = RedirectResponse("/ui/signin?reason=signed-out", status_code=303)
    resp.delete_cookie(COOKIE, path=COOKIE_PATH)
    return resp


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/ui/") or value.startswith("//") or "\\" in value:
        return "/ui/"
    return value

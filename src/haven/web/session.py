"""The dashboard's session: a server-side session id in an HttpOnly, SameSite=Strict cookie, origin
checks and CSRF tokens.

The cookie holds a random session secret (``core.web_sessions``), never the API token; every
request resolves it and re-checks the token it was made from, so a revoked or expired token signs
the browser out at once. Every post must come from this server's own pages: a browser's
``Sec-Fetch-Site``, ``Origin`` or ``Referer`` naming another origin is refused, and the form must
carry a CSRF token: an HMAC, under a per-process secret, of the session secret (or, for the
sign-in form, of a pre-session cookie set with the form), which a page elsewhere cannot compute.

Why a browser is sent back to the sign-in page is one of ``REASONS``' codes; nothing else is shown.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request

from haven.errors import Forbidden, HavenError, Unauthenticated
from haven.services.auth import Caller, TokenExpired, TokenInvalid
from haven.services.sessions import SessionExpired

__all__ = [
    "COOKIE", "PRESESSION_COOKIE", "COOKIE_PATH", "REASONS", "SignInRequired", "SessionMissing", "CsrfInvalid",
    "CrossOriginRefused", "csrf_token", "check_csrf", "check_same_origin", "current_caller", "session_secret",
    "signin_csrf", "check_signin_csrf", "new_presession", "reason_text",
]

COOKIE = "haven_session"
PRESESSION_COOKIE = "haven_signin"
COOKIE_PATH = "/ui"

#: Why the browser is at the sign-in page; unknown codes show nothing.
REASONS = {
    "session-expired": "your dashboard session expired.",
    "session-ended": "your dashboard session ended (signed out, or the server no longer knows it).",
    "token-revoked": "the API token you signed in with was revoked or is unknown.",
    "token-expired": "the API token you signed in with expired.",
    "signed-out": "you signed out.",
}


def reason_text(code: str | None) -> str | None:
    return REASONS.get(code or "")


class SignInRequired(Exception):
    """Raised by a page when there is no valid session; answered with a redirect to the sign-in page."""

    def __init__(self, reason: str | None = None):
        super().__init__(reason or "")
        self.reason = reason if reason in REASONS else None


class SessionMissing(Unauthenticated):
    code = "UserErrorSessionMissing"
    message = "You are not signed in to the dashboard (or your session or token expired or was revoked); nothing was changed."
    recommendation = "Sign in again at /ui/signin with an API token."


class CsrfInvalid(Forbidden):
    code = "UserErrorCsrfTokenInvalid"
    message = "The form's anti-forgery token is missing or does not match this session; the request was refused and nothing was changed."
    recommendation = "Reload the page and submit the form again from the dashboard itself."


class CrossOriginRefused(Forbidden):
    code = "UserErrorCrossOriginRequest"
    message = "The form was posted from another site ({origin}); the request was refused and nothing was changed."
    recommendation = "Open the dashboard at its own address and submit the form from there."


def session_secret(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def _reason(err: HavenError) -> str:
    if isinstance(err, SessionExpired):
        return "session-expired"
    if isinstance(err, TokenExpired):
        return "token-expired"
    if isinstance(err, TokenInvalid):
        return "token-revoked"
    return "session-ended"


def current_caller(request: Request) -> Caller:
    """The signed-in caller, or :class:`SignInRequired`."""
    secret = session_secret(request)
    if not secret:
        raise SignInRequired()
    try:
        return request.app.state.core.web_sessions.resolve(secret)
    except HavenError as e:
        raise SignInRequired(_reason(e)) from None


def _mac(request: Request, purpose: bytes, value: str) -> str:
    return hmac.new(request.app.state.web_secret, purpose + b":" + value.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    return _mac(request, b"csrf", session_secret(request) or "")


def check_same_origin(request: Request) -> None:
    """Refuse a browser's post from another origin. Requests without any of these headers come from no browser."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise CrossOriginRefused(origin=f"Sec-Fetch-Site: {site}"[:100])
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is not None:
        if origin != own:
            raise CrossOriginRefused(origin=origin[:100])
        return
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}" != own:
            raise CrossOriginRefused(origin=f"{parts.scheme}://{parts.netloc}"[:100])


def check_csrf(request: Request, submitted: str | None) -> None:
    check_same_origin(request)
    if not session_secret(request) or not submitted or not hmac.compare_digest(submitted, csrf_token(request)):
        raise CsrfInvalid()


# ---- the sign-in form: no session yet, so its token is bound to a pre-session cookie


def new_presession() -> str:
    return secrets.token_urlsafe(32)


def signin_csrf(request: Request, presession: str) -> str:
    return _mac(request, b"signin", presession)


def check_signin_csrf(request: Request, submitted: str | None) -> None:
    check_same_origin(request)
    presession = request.cookies.get(PRESESSION_COOKIE)
    if not presession or not submitted or not hmac.compare_digest(submitted, signin_csrf(request, presession)):
        raise CsrfInvalid()

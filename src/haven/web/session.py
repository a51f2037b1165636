"""The dashboard's session: the API token in an HttpOnly, SameSite=Strict cookie, and CSRF tokens.

The cookie holds the same bearer token the API and the CLI use; it is authenticated on every
request with ``core.auth.authenticate`` (so a revoked or expired token signs the browser out at
once). Every form carries a CSRF token: an HMAC of the session token under a per-process secret,
which a page on another origin cannot compute (it cannot read the HttpOnly cookie).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from haven.errors import Forbidden, Unauthenticated
from haven.services.auth import Caller

__all__ = ["COOKIE", "SignInRequired", "SessionMissing", "CsrfInvalid", "csrf_token", "check_csrf", "current_caller", "session_token"]

COOKIE = "haven_session"


class SignInRequired(Exception):
    """Raised by a page when there is no valid session; answered with a redirect to the sign-in page."""

    def __init__(self, reason: str | None = None):
        super().__init__(reason or "")
        self.reason = reason


class SessionMissing(Unauthenticated):
    code = "UserErrorSessionMissing"
    message = "You are not signed in to the dashboard (or your token was revoked or expired); nothing was changed."
    recommendation = "Sign in again at /ui/signin with an API token."


class CsrfInvalid(Forbidden):
    code = "UserErrorCsrfTokenInvalid"
    message = "The form's anti-forgery token is missing or does not match this session; the request was refused and nothing was changed."
    recommendation = "Reload the page and submit the form again from the dashboard itself."


def session_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def current_caller(request: Request) -> Caller:
    """The signed-in caller, or :class:`SignInRequired`."""
    from haven.errors import HavenError

    token = session_token(request)
    if not token:
        raise SignInRequired()
    try:
        return request.app.state.core.auth.authenticate(token)
    except HavenError as e:
        raise SignInRequired(f"{e.code}: {e.text}") from None


def csrf_token(request: Request) -> str:
    token = session_token(request) or ""
    return hmac.new(request.app.state.web_secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, submitted: str | None) -> None:
    if not session_token(request) or not submitted or not hmac.compare_digest(submitted, csrf_token(request)):
        raise CsrfInvalid()

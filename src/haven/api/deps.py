"""Request dependencies: the application core and the authenticated caller."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from haven.services.auth import Caller, TokenInvalid
from haven.services.core import Haven

__all__ = ["core", "caller"]

_bearer = HTTPBearer(auto_error=False, description="A Haven token: 'haven token create', or the local Owner token the server made on first start.")


def core(request: Request) -> Haven:
    return request.app.state.core


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise TokenInvalid()
    return request.app.state.core.auth.authenticate(credentials.credentials)



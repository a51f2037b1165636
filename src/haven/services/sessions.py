"""Dashboard sessions, kept on the server: a browser holds a random session secret, never a token.

Signing in with a token makes a session (``web_sessions``: the SHA-256 of its secret, the token's id,
an expiry at most ``LIFETIME`` away and never past the token's own). Each request resolves the
secret to the token and checks the token again, so a revoked or expired token signs the browser out
at once; signing out deletes the session.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from haven.db.models import Token, WebSession
from haven.domain.enums import PrincipalKind
from haven.errors import Forbidden, Unauthenticated
from haven.services.auth import Caller, hash_secret

__all__ = ["WebSessionService", "SessionUnknown", "SessionExpired", "AgentSignInRefused", "LIFETIME", "SESSION_PREFIX", "Started"]

LIFETIME = timedelta(hours=12)
SESSION_PREFIX = "hvs_"


class SessionUnknown(Unauthenticated):
    code = "UserErrorSessionUnknown"
    message = "This dashboard session does not exist (it was signed out, or never made by this server)."
    recommendation = "Sign in again at /ui/signin with an API token."


class SessionExpired(Unauthenticated):
    code = "UserErrorSessionExpired"
    message = "This dashboard session expired at {expired}."
    recommendation = "Sign in again at /ui/signin with an API token."


class AgentSignInRefused(Forbidden):
    code = "UserErrorAgentSignInRefused"
    message = "A host agent's credential cannot sign in to the dashboard; nothing was changed."
    recommendation = "Sign in with a user's API token (an Owner makes one with 'haven token create --name NAME --role Reader')."


@dataclass(frozen=True)
class Started:
    secret: str
    expires_at: datetime
    caller: Caller


class WebSessionService:
    def __init__(self, core):
        self.core = core

    def start(self, token_secret: str) -> Started:
        """Authenticate the token (typed errors as ``authenticate``) and open a session for it."""
        token_id, caller = self.core.auth.identify(token_secret)
        if caller.kind == PrincipalKind.AGENT.value:  # an agent acts through the agent API only
            raise AgentSignInRefused()
        now = self.core.clock.now()
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        with self.core.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.expires_at <= now))
            token_expiry = s.scalar(select(Token.expires_at).where(Token.id == token_id))
            expires = min(now + LIFETIME, token_expiry) if token_expiry is not None else now + LIFETIME
            s.add(WebSession(secret_hash=hash_secret(secret), token_id=token_id, created_at=now, expires_at=expires))
        return Started(secret, expires, caller)

    def resolve(self, secret: str | None) -> Caller:
        """The caller of a session: SessionUnknown, SessionExpired, or the token's own errors."""
        if not secret or not secret.startswith(SESSION_PREFIX) or len(secret) > 200:
            raise SessionUnknown()
        with self.core.db.session() as s:
            row = s.scalar(select(WebSession).where(WebSession.secret_hash == hash_secret(secret)))
            if row is None:
                raise SessionUnknown()
            if row.expires_at <= self.core.clock.now():
                s.delete(row)
                expired = row.expires_at
                token_id = None
            else:
                token_id = row.token_id
        if token_id is None:
            raise SessionExpired(expired=expired.isoformat())
        return self.core.auth.token_caller(token_id)

    def end(self, secret: str | None) -> None:
        """Sign out: the session stops working, whatever the browser keeps."""
        if not secret:
            return
        with self.core.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.secret_hash == hash_secret(secret)))

"""The user principals every access matrix uses, made through the real token service.

``user_tokens`` makes, on a core whose subscriptions ``prod`` and ``dev`` exist: a token of each role on
``prod``, an Owner of ``dev`` (``other-owner``), a global Owner, a token that expires in an hour
(``expired`` once the test's clock has moved on) and one to be revoked (``revoked``), whose revocation the
caller triggers when it wants it (the dashboard's matrix signs in with it first).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

__all__ = ["ROLES", "user_tokens", "bearer"]

ROLES = {"reader": "Reader", "operator": "Operator", "contributor": "Contributor", "owner": "Owner"}


def user_tokens(core, root) -> tuple[dict[str, str | None], Callable[[], None]]:
    """``(tokens by principal, revoke)``: ``revoke()`` revokes the ``revoked`` principal's token."""
    tokens: dict[str, str | None] = {"none": None}
    for who, role in ROLES.items():
        tokens[who] = core.auth.create_token(root, who, role, "prod")["token"]
    tokens["other-owner"] = core.auth.create_token(root, "other", "Owner", "dev")["token"]
    tokens["global-owner"] = core.auth.create_token(root, "admin2", "Owner")["token"]
    tokens["expired"] = core.auth.create_token(root, "old", "Owner", expires_in=timedelta(hours=1))["token"]
    revoked = core.auth.create_token(root, "gone", "Owner")
    tokens["revoked"] = revoked["token"]
    return tokens, lambda: core.auth.revoke_token(root, revoked["id"])


def bearer(token: str | None) -> dict:
    """The Authorization header of ``token`` (none for no token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}

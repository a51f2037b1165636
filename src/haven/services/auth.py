"""Principals, bearer tokens and per-subscription roles.

A ``Caller`` is who makes a request: a principal with its role assignments. Services ask
``caller.require(subscription_id, Role.X)`` before they act; that is the only place an
authorization decision is made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from haven.db.models import Principal, RoleAssignment, Subscription, Token
from haven.domain.enums import PrincipalKind, Role
from haven.errors import Conflict, Forbidden, NotFound, Unauthenticated, UserError
from haven.files import write_private

__all__ = [
    "Caller",
    "AuthService",
    "TokenInvalid",
    "TokenExpired",
    "RoleTooLow",
    "PrincipalNotOwned",
    "ALL_SUBSCRIPTIONS",
    "hash_secret",
]

ALL_SUBSCRIPTIONS = "*"
TOKEN_PREFIX = "hvn_"


class TokenInvalid(Unauthenticated):
    code = "UserErrorTokenInvalid"
    message = "The bearer token is missing, malformed, unknown or revoked."
    recommendation = "Create a token with 'haven token create' (as an Owner) and pass it as 'Authorization: Bearer <token>' or HAVEN_TOKEN."


class TokenExpired(Unauthenticated):
    code = "UserErrorTokenExpired"
    message = "The bearer token expired at {expired}."
    recommendation = "Create a new token with 'haven token create'."


class RoleTooLow(Forbidden):
    code = "UserErrorAuthorizationFailed"
    message = "Principal {principal!r} needs the role {needed} on subscription {subscription!r} for this operation; it has {has}."
    recommendation = "Ask an Owner of the subscription to assign the role (haven token create --role {needed} --subscription {subscription})."
    recommendation_ui = "Ask an Owner of the subscription for the {needed} role (a token with that role), then sign in with it."


class AgentScopeViolation(Forbidden):
    code = "UserErrorAgentScopeViolation"
    message = "Host agent {principal!r} may act only on its own host's VMs and jobs."
    recommendation = "Use the credential of the agent that runs on the VM's host."


class OwnTokenRevocation(Conflict):
    code = "UserErrorCannotRevokeOwnToken"
    message = "A principal cannot revoke its own tokens: that could lock the last Owner out."
    recommendation = "Revoke it with another Owner's token."


class OwnRoleChange(Conflict):
    code = "UserErrorCannotChangeOwnRole"
    message = "A principal cannot change its own role assignments (that could lock the last Owner out)."
    recommendation = "Ask another Owner to change the role, or create the token for another principal (--principal)."


class PrincipalNotOwned(Forbidden):
    code = "UserErrorPrincipalNotOwned"
    message = ("A token for principal {principal!r} would act with everything it holds, and it {what}. "
               "Only a global Owner may create tokens for it.")
    recommendation = "Create the token for a principal of your own (--principal NEW-NAME), or ask a global Owner."


class InvalidRole(UserError):
    code = "UserErrorInvalidRole"
    message = "Unknown role {role!r}; roles are Reader, Operator, Contributor and Owner."
    recommendation = "Pass one of: Reader, Operator, Contributor, Owner."


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    principal_id: str
    name: str
    kind: str
    roles: dict[str, Role] = field(default_factory=dict)  # scope -> role
    host_id: str | None = None

    def role_in(self, subscription_id: str | None) -> Role | None:
        best = self.roles.get(ALL_SUBSCRIPTIONS)
        scoped = self.roles.get(subscription_id) if subscription_id else None
        if best is None or (scoped is not None and scoped.rank > best.rank):
            best = scoped
        return best

    def can(self, subscription_id: str | None, needed: Role) -> bool:
        role = self.role_in(subscription_id)
        return role is not None and role.allows(needed)

    def require(self, subscription_id: str | None, needed: Role) -> None:
        if not self.can(subscription_id, needed):
            has = self.role_in(subscription_id)
            raise RoleTooLow(principal=self.name, needed=needed.value, subscription=subscription_id or ALL_SUBSCRIPTIONS, has=has.value if has else "no role")

    def require_global(self, needed: Role) -> None:
        """Server-wide operations (subscriptions, regions) need a role on every subscription."""
        role = self.roles.get(ALL_SUBSCRIPTIONS)
        if role is None or not role.allows(needed):
            raise RoleTooLow(principal=self.name, needed=needed.value, subscription=ALL_SUBSCRIPTIONS, has=role.value if role else "no role")

    def require_host(self, host_id: str | None) -> None:
        if self.kind == PrincipalKind.AGENT.value and host_id != self.host_id:
            raise AgentScopeViolation(principal=self.name)

    def visible_subscriptions(self) -> set[str] | None:
        """None means all."""
        if ALL_SUBSCRIPTIONS in self.roles:
            return None
        return set(self.roles)


class AuthService:
    def __init__(self, core):
        self.core = core

    # ---- tokens ----
    def authenticate(self, secret: str | None) -> Caller:
        return self.identify(secret)[1]

    def identify(self, secret: str | None) -> tuple[str, Caller]:
        """The id of the token ``secret`` is, and its caller (typed errors as ``authenticate``)."""
        if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            raise TokenInvalid()
        with self.core.db.session() as s:
            token = s.scalar(select(Token).where(Token.secret_hash == hash_secret(secret)))
            return (token.id if token is not None else ""), self._valid(s, token)

    def token_caller(self, token_id: str) -> Caller:
        """The caller of a token known by its id (a dashboard session's), checked as ``authenticate`` checks a secret."""
        with self.core.db.session() as s:
            return self._valid(s, s.get(Token, token_id))

    def _valid(self, s, token: Token | None) -> Caller:
        if token is None or token.revoked:
            raise TokenInvalid()
        if token.expires_at is not None and token.expires_at <= self.core.clock.now():
            raise TokenExpired(expired=token.expires_at.isoformat())
        principal = s.get(Principal, token.principal_id)
        return self._caller(s, principal)

    def _caller(self, s, principal: Principal) -> Caller:
        roles = {a.scope: Role(a.role) for a in s.scalars(select(RoleAssignment).where(RoleAssignment.principal_id == principal.id))}
        return Caller(principal.id, principal.name, principal.kind, roles, principal.host_id)

    def create_token(
        self,
        caller: Caller | None,
        name: str,
        role: str,
        subscription: str | None = None,
        expires_in: timedelta | None = None,
        principal_name: str | None = None,
    ) -> dict:
        """Make a principal (or reuse one by name), assign the role, and return a new secret once."""
        try:
            wanted = Role(role)
        except ValueError:
            raise InvalidRole(role=role) from None
        if not name or len(name) > 128:
            raise UserError("A token name of 1 to 128 characters is required.", "Pass --name with a short description.")
        now = self.core.clock.now()
        with self.core.db.session() as s:
            scope = ALL_SUBSCRIPTIONS
            if subscription:
                sub = self.core.subscriptions.find(s, subscription)
                scope = sub.id
            if caller is not None:  # None only for the server's own bootstrap
                if scope == ALL_SUBSCRIPTIONS:
                    caller.require_global(Role.OWNER)
                else:
                    caller.require(scope, Role.OWNER)
            pname = principal_name or name
            principal = s.scalar(select(Principal).where(Principal.name == pname))
            if principal is None:
                principal = Principal(name=pname, kind=PrincipalKind.USER.value, created_at=now)
                s.add(principal)
                s.flush()
            assignment = s.scalar(select(RoleAssignment).where(RoleAssignment.principal_id == principal.id, RoleAssignment.scope == scope))
            if caller is not None and principal.id == caller.principal_id and (assignment is None or assignment.role != wanted.value):
                raise OwnRoleChange()
            if caller is not None and principal.id != caller.principal_id:
                self._check_may_act_for(s, caller, principal)
            if assignment is None:
                s.add(RoleAssignment(principal_id=principal.id, scope=scope, role=wanted.value))
            else:
                assignment.role = wanted.value
            secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
            token = Token(principal_id=principal.id, name=name, secret_hash=hash_secret(secret), created_at=now,
                          expires_at=now + expires_in if expires_in else None)
            s.add(token)
            s.flush()
            return {"id": token.id, "name": name, "principal": pname, "role": wanted.value,
                    "scope": scope, "expires_at": token.expires_at, "token": secret}

    @staticmethod
    def _check_may_act_for(s, caller: Caller, principal: Principal) -> None:
        """A token acts with every role its principal holds: minting one for an existing principal needs
        ownership of all of them (its subscriptions, and the guards it approves for)."""
        from haven.db.guard_tables import GuardApprover, ResourceGuard

        if caller.roles.get(ALL_SUBSCRIPTIONS) is Role.OWNER:
            return
        scopes = set(s.scalars(select(RoleAssignment.scope).where(RoleAssignment.principal_id == principal.id)))
        scopes |= {f"guard:{sub}" for sub in s.scalars(select(ResourceGuard.subscription_id).join(
            GuardApprover, GuardApprover.guard_id == ResourceGuard.id).where(GuardApprover.principal_id == principal.id))}
        foreign = sorted(x for x in scopes if not caller.can(x.removeprefix("guard:"), Role.OWNER) or x == ALL_SUBSCRIPTIONS)
        if principal.kind != PrincipalKind.USER.value or foreign:
            what = (f"is a {principal.kind} principal" if principal.kind != PrincipalKind.USER.value
                    else f"holds roles in {len(foreign)} scope(s) that {caller.name!r} does not own")
            raise PrincipalNotOwned(principal=principal.name, what=what)

    def list_tokens(self, caller: Caller) -> list[dict]:
        caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            rows = s.execute(select(Token, Principal).join(Principal, Token.principal_id == Principal.id)).all()
            return [{"id": t.id, "name": t.name, "principal": p.name, "created_at": t.created_at,
                     "expires_at": t.expires_at, "revoked": t.revoked} for t, p in rows]

    def revoke_token(self, caller: Caller, token_id: str) -> None:
        caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            token = s.get(Token, token_id)
            if token is None:
                raise NotFound(f"Token {token_id!r} does not exist.", "List tokens with 'haven token list'.")
            if token.principal_id == caller.principal_id:
                raise OwnTokenRevocation()
            token.revoked = True

    def agent_token(self, host_id: str, host_name: str, revoke_others: bool = False) -> str:
        """A credential for a host agent: it reaches only its own host (checked by ``require_host``).

        With ``revoke_others`` every earlier credential of that agent stops working (rotation).
        """
        now = self.core.clock.now()
        with self.core.db.session() as s:
            name = f"agent:{host_name}"
            principal = s.scalar(select(Principal).where(Principal.name == name))
            if principal is not None and revoke_others:
                for old in s.scalars(select(Token).where(Token.principal_id == principal.id, Token.revoked.is_(False))):
                    old.revoked = True
            if principal is None:
                # No role assignment: an agent uses only the agent endpoints, for its own host.
                principal = Principal(name=name, kind=PrincipalKind.AGENT.value, host_id=host_id, created_at=now)
                s.add(principal)
                s.flush()
            secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
            s.add(Token(principal_id=principal.id, name=name, secret_hash=hash_secret(secret), created_at=now))
            return secret

    # ---- first start ----
    def bootstrap_local_owner(self, credentials_path: Path, server_url: str) -> str | None:
        """On the first start, make an Owner token for the local user and leave it where the CLI looks.

        Returns the token when one was made. The file is readable by its owner only.
        """
        with self.core.db.session() as s:
            has_owner = s.scalar(select(RoleAssignment.id).where(RoleAssignment.scope == ALL_SUBSCRIPTIONS, RoleAssignment.role == Role.OWNER.value))
        if has_owner and credentials_path.exists():
            return None
        made = self.create_token(None, "local-owner", Role.OWNER.value, principal_name="local-owner")
        credentials_path.parent.mkdir(parents=True, exist_ok=True)
        write_private(credentials_path, json.dumps({"server": server_url, "token": made["token"]}).encode())
        return made["token"]


def subscription_ids(s) -> list[str]:
    return list(s.scalars(select(Subscription.id)))

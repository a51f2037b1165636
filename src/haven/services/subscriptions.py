"""Subscriptions (the tenant and access-control scope) and regions (from the configuration)."""

from __future__ import annotations

import re

from sqlalchemy import or_, select

from haven.db.models import Region, Subscription
from haven.domain.enums import Role
from haven.errors import Conflict, NotFound, UserError
from haven.services.auth import Caller

__all__ = ["SubscriptionService", "RegionService", "SubscriptionNotFound", "RegionNotFound"]

_SUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SubscriptionNotFound(NotFound):
    code = "UserErrorSubscriptionNotFound"
    message = "Subscription {name!r} does not exist or you have no role on it."
    recommendation = "List the subscriptions you can see with 'haven subscription list'."


class SubscriptionNameInvalid(UserError):
    code = "UserErrorSubscriptionNameInvalid"
    message = "The subscription name {name!r} is invalid: use 1 to 64 letters, digits, dots, underscores or hyphens, starting with a letter or digit."
    recommendation = "Choose a name such as 'production'."


class SubscriptionExists(Conflict):
    code = "UserErrorSubscriptionAlreadyExists"
    message = "A subscription named {name!r} already exists."
    recommendation = "Pick another name, or use the existing subscription."


class RegionNotFound(NotFound):
    code = "UserErrorRegionNotFound"
    message = "Region {name!r} is not configured on this server; known regions: {known}."
    recommendation = "Pick one of the known regions, or add the region to the server's haven.toml and restart it."


class SubscriptionService:
    def __init__(self, core):
        self.core = core

    def find(self, s, ref: str) -> Subscription:
        """By id or by name."""
        sub = s.scalar(select(Subscription).where(or_(Subscription.id == ref, Subscription.name == ref)))
        if sub is None:
            raise SubscriptionNotFound(name=ref)
        return sub

    def get_visible(self, s, caller: Caller, ref: str, needed: Role = Role.READER) -> Subscription:
        sub = self.find(s, ref)
        if not caller.can(sub.id, Role.READER):
            raise SubscriptionNotFound(name=ref)  # do not reveal what exists
        caller.require(sub.id, needed)
        return sub

    def create(self, caller: Caller, name: str) -> dict:
        caller.require_global(Role.OWNER)
        if not isinstance(name, str) or not _SUB_NAME.fullmatch(name):
            raise SubscriptionNameInvalid(name=name)
        with self.core.db.session() as s:
            if s.scalar(select(Subscription.id).where(Subscription.name == name)):
                raise SubscriptionExists(name=name)
            sub = Subscription(name=name, created_at=self.core.clock.now())
            s.add(sub)
            s.flush()
            self.core.inventory.share_own_hosts(s, sub.id)
            return view(sub)

    def list(self, caller: Caller) -> list[dict]:
        visible = caller.visible_subscriptions()
        with self.core.db.session() as s:
            subs = s.scalars(select(Subscription).order_by(Subscription.name)).all()
            return [view(x) for x in subs if visible is None or x.id in visible]

    def show(self, caller: Caller, ref: str) -> dict:
        with self.core.db.session() as s:
            return view(self.get_visible(s, caller, ref))


def view(sub: Subscription) -> dict:
    return {"id": sub.id, "name": sub.name, "created_at": sub.created_at}


class RegionService:
    def __init__(self, core):
        self.core = core

    def sync_from_settings(self) -> None:
        with self.core.db.session() as s:
            for r in self.core.settings.regions:
                row = s.get(Region, r.name)
                if row is None:
                    s.add(Region(name=r.name, storage_url=r.storage_url, paired_region=r.paired_region))
                else:
                    row.storage_url, row.paired_region = r.storage_url, r.paired_region

    def require(self, name: str):
        region = self.core.settings.region(name)
        if region is None:
            raise RegionNotFound(name=name, known=", ".join(r.name for r in self.core.settings.regions))
        return region

    def list(self) -> list[dict]:
        return [{"name": r.name, "paired_region": r.paired_region} for r in self.core.settings.regions]

    def ip_ranges(self, name: str) -> dict:
        region = self.require(name)
        return {"region": region.name, "storage_endpoints": [region.storage_url.split("://")[0]], "ip_ranges": list(region.ip_ranges)}

"""Multi-user authorization's tables (Azure Backup's Resource Guard), on the metadata store's ``Base``.

A ``ResourceGuard`` lives in a subscription (usually one that the security administrators own, not
the backup administrators); ``GuardApprover`` rows say who may approve; ``VaultGuard`` puts a vault
under a guard; ``GuardRequest`` is one approval request for one protected operation; every step
is a ``GuardAuditEvent``, kept after the vault or guard is gone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from haven.db.base import Base
from haven.db.base import id_column as _id

__all__ = ["ResourceGuard", "GuardApprover", "VaultGuard", "GuardRequest", "GuardAuditEvent"]


class ResourceGuard(Base):
    __tablename__ = "resource_guards"
    __table_args__ = (UniqueConstraint("subscription_id", "name_key", name="uq_resource_guards_subscription_name"),)
    id: Mapped[str] = _id()
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"))
    name: Mapped[str] = mapped_column(String(50))
    name_key: Mapped[str] = mapped_column(String(50))
    #: how long a request may wait for approval, and how long an approval stays usable
    approval_window_minutes: Mapped[int] = mapped_column(Integer, default=240)
    created_at: Mapped[datetime]


class GuardApprover(Base):
    """The ``Guard Approver`` role on one guard."""

    __tablename__ = "resource_guard_approvers"
    __table_args__ = (UniqueConstraint("guard_id", "principal_id", name="uq_resource_guard_approvers"),)
    id: Mapped[str] = _id()
    guard_id: Mapped[str] = mapped_column(ForeignKey("resource_guards.id", ondelete="CASCADE"))
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class VaultGuard(Base):
    """A vault under a guard (at most one). A guard with vaults cannot be deleted."""

    __tablename__ = "vault_resource_guards"
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True)
    guard_id: Mapped[str] = mapped_column(ForeignKey("resource_guards.id"))
    created_at: Mapped[datetime]


class GuardRequest(Base):
    """One request to run one protected operation, with exactly these parameters, on one vault, by one principal."""

    __tablename__ = "resource_guard_requests"
    __table_args__ = (Index("ix_resource_guard_requests_vault", "vault_id", "status"),)
    id: Mapped[str] = _id()
    guard_id: Mapped[str] = mapped_column(String(32))
    vault_id: Mapped[str] = mapped_column(String(32))
    vault_name: Mapped[str] = mapped_column(String(50))
    subscription_id: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]]
    digest: Mapped[str] = mapped_column(String(64))
    requester_id: Mapped[str] = mapped_column(String(32))
    requester: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None]
    comment: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]


class GuardAuditEvent(Base):
    __tablename__ = "resource_guard_audit"
    __table_args__ = (Index("ix_resource_guard_audit_guard", "guard_id", "time"),)
    #: a sequence: events of the same instant keep their order
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(32))
    principal: Mapped[str] = mapped_column(String(128))
    guard_id: Mapped[str | None] = mapped_column(String(32))
    vault_id: Mapped[str | None] = mapped_column(String(32))
    vault_name: Mapped[str | None] = mapped_column(String(50))
    subscription_id: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(32))
    operation: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(96))
    detail: Mapped[str | None] = mapped_column(Text)

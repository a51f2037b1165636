"""The metadata store's tables (SQLAlchemy 2). Migrations in ``haven/db/migrations`` create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from haven.db.base import Base
from haven.db.base import id_column as _id

__all__ = [
    "Alert",
    "Base",
    "Subscription",
    "Region",
    "Principal",
    "RoleAssignment",
    "Token",
    "Vault",
    "Policy",
    "Host",
    "HostShare",
    "VirtualMachine",
    "ProtectedItem",
    "Job",
    "RecoveryPoint",
    "WebSession",
]


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class Region(Base):
    __tablename__ = "regions"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    storage_url: Mapped[str] = mapped_column(Text)
    paired_region: Mapped[str | None] = mapped_column(String(64))


class Principal(Base):
    __tablename__ = "principals"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class RoleAssignment(Base):
    """``scope`` is a subscription id, or ``*`` for every subscription (the server's owner)."""

    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("principal_id", "scope"),)
    id: Mapped[str] = _id()
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))


class Token(Base):
    """Bearer tokens; only a SHA-256 of the secret is stored."""

    __tablename__ = "tokens"
    id: Mapped[str] = _id()
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Vault(Base):
    __tablename__ = "vaults"
    __table_args__ = (UniqueConstraint("subscription_id", "name_key"),)
    id: Mapped[str] = _id()
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"))
    name: Mapped[str] = mapped_column(String(50))
    name_key: Mapped[str] = mapped_column(String(50))
    region: Mapped[str] = mapped_column(ForeignKey("regions.name"))
    redundancy: Mapped[str] = mapped_column(String(8))
    storage_url: Mapped[str] = mapped_column(Text)
    soft_delete_days: Mapped[int] = mapped_column(Integer, default=14)
    immutability: Mapped[str] = mapped_column(String(16), default="Disabled")
    #: the key-vault KEK that wraps the vault's data key (None: the server's master key)
    kek_key_vault: Mapped[str | None] = mapped_column(String(24))
    kek_key: Mapped[str | None] = mapped_column(String(127))
    alert_webhook: Mapped[str | None] = mapped_column(Text)
    alert_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    #: garbage collection: when it last completed, and when deletions (or a failed backup) asked for it
    gc_last_at: Mapped[datetime | None]
    gc_requested_at: Mapped[datetime | None]
    policies: Mapped[list["Policy"]] = relationship(back_populates="vault", cascade="all, delete-orphan")


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("vault_id", "name_key"),)
    id: Mapped[str] = _id()
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(150))
    name_key: Mapped[str] = mapped_column(String(150))
    schedule: Mapped[dict[str, Any]]
    retention: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    vault: Mapped[Vault] = relationship(back_populates="policies")


class Host(Base):
    """A hypervisor host whose agent registered in a region."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("name"),)
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(ForeignKey("regions.name"))
    adapter_url: Mapped[str] = mapped_column(Text)
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime]
    #: the job types this host's agent runs (None: the server's in-process agent, which runs all)
    job_types: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    agent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: a remote agent's last report of its path to its region's vaults (prepare check shows it)
    network: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    @property
    def remote(self) -> bool:
        """Run by a ``haven agent`` of its own, not by the server's in-process agent."""
        return self.job_types is not None


class HostShare(Base):
    """A host shared with a subscription: the subscription sees and acts on the host's VMs, and only then."""

    __tablename__ = "host_shares"
    __table_args__ = (UniqueConstraint("host_id", "subscription_id"),)
    id: Mapped[str] = _id()
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class VirtualMachine(Base):
    __tablename__ = "virtual_machines"
    __table_args__ = (UniqueConstraint("host_id", "name"),)
    id: Mapped[str] = _id()
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    uuid: Mapped[str | None] = mapped_column(String(64))
    power_state: Mapped[str] = mapped_column(String(16), default="unknown")
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime]
    host: Mapped[Host] = relationship()


class ProtectedItem(Base):
    __tablename__ = "protected_items"
    __table_args__ = (UniqueConstraint("vm_id"), Index("ix_protected_items_state_retention_due", "state", "retention_due_at"))
    id: Mapped[str] = _id()
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id"))
    vm_id: Mapped[str] = mapped_column(ForeignKey("virtual_machines.id"))
    policy_id: Mapped[str | None] = mapped_column(ForeignKey("policies.id"))
    state: Mapped[str] = mapped_column(String(24))
    include_disks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    exclude_disks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    last_backup_status: Mapped[str | None] = mapped_column(String(32))
    last_backup_time: Mapped[datetime | None]
    checkpoint: Mapped[str | None] = mapped_column(String(128))
    #: the newest schedule slot a backup was enqueued for: a slot never runs twice
    last_slot: Mapped[datetime | None]
    last_success_time: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    #: when retention must look at the item again (its next point expiry); None: now (never looked, or a point,
    #: its policy or its state changed since: ``services/retention_due.py``)
    retention_due_at: Mapped[datetime | None]
    vault: Mapped[Vault] = relationship()
    vm: Mapped[VirtualMachine] = relationship()
    policy: Mapped[Policy | None] = relationship()


class Job(Base):
    """A unit of work in the durable queue. A worker holds a lease and renews it by heartbeat;
    a job whose lease ran out is retried or failed by the reaper, never left in progress."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_vault_created", "vault_id", "created_at"),
        Index("ix_jobs_vault_status_created", "vault_id", "status", "created_at"),
        Index("ix_jobs_item_status", "item_id", "status"),
        Index("ix_jobs_host_status", "host_id", "status"),
    )
    id: Mapped[str] = _id()
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    vault_id: Mapped[str | None] = mapped_column(ForeignKey("vaults.id", ondelete="SET NULL"))
    item_id: Mapped[str | None] = mapped_column(ForeignKey("protected_items.id", ondelete="SET NULL"))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    subtasks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(96))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_recommendation: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class RecoveryPoint(Base):
    __tablename__ = "recovery_points"
    __table_args__ = (
        Index("ix_recovery_points_item_time", "item_id", "time"),
        Index("ix_recovery_points_vault", "vault_id"),
    )
    id: Mapped[str] = _id()
    item_id: Mapped[str] = mapped_column(ForeignKey("protected_items.id"))
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    time: Mapped[datetime]
    consistency: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime | None]
    retain_until: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="Available")
    checkpoint: Mapped[str | None] = mapped_column(String(128))


class Alert(Base):
    """An alert raised for a vault: a failed job, a missed backup window, an item without a recent good backup."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("vault_id", "dedup_key"),)
    id: Mapped[str] = _id()
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    item_id: Mapped[str | None] = mapped_column(ForeignKey("protected_items.id", ondelete="SET NULL"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    delivered: Mapped[list[Any]] = mapped_column(JSON, default=list)
class WebSession(Base):
    """A dashboard sign-in: the browser's cookie holds the secret, only its SHA-256 is stored here.

    It lasts until ``expires_at`` (never past its token's expiry), sign-out deletes it, and every
    request re-checks the token it was made from (revoked or expired: signed out at once).
    """

    __tablename__ = "web_sessions"
    id: Mapped[str] = _id()
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]

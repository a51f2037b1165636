"""The key vault's tables, on the metadata store's ``Base``.

Key material and secret values are never stored in clear: ``material`` and ``value`` hold bytes
sealed by the server's master key (:mod:`haven.keyvault.crypto`), bound to the row they belong to.
An HSM key holds no material here, only ``hsm_ref`` (the token and the object's label).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from haven.db.base import Base
from haven.db.types import new_id

__all__ = ["KeyVault", "KvKey", "KvSecret", "KvAccessPolicy"]


class KeyVault(Base):
    """A key vault of a subscription, in a region. Soft-deleted vaults keep their name until purged."""

    __tablename__ = "key_vaults"
    __table_args__ = (UniqueConstraint("subscription_id", "name", name="uq_key_vaults_subscription_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(24))
    region: Mapped[str] = mapped_column(String(64))
    retention_days: Mapped[int] = mapped_column(Integer, default=90)
    purge_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    purge_at: Mapped[datetime | None]


class _Version:
    """What every version of a key or a secret holds; ``object_id`` names the object across versions,
    deletions and restores. Each kind's table adds the columns of its own (see the two classes below)."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    vault_id: Mapped[str] = mapped_column(ForeignKey("key_vaults.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(127))
    version: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(32))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    purge_at: Mapped[datetime | None]


class KvKey(_Version, Base):
    """One version of a key."""

    __tablename__ = "key_vault_keys"
    __table_args__ = (UniqueConstraint("vault_id", "name", "version", name="uq_key_vault_keys_version"),)
    kty: Mapped[str] = mapped_column(String(8))  # RSA | AES
    size: Mapped[int] = mapped_column(Integer)
    protection: Mapped[str] = mapped_column(String(8), default="software")  # software | hsm
    material: Mapped[bytes | None] = mapped_column(LargeBinary)
    public: Mapped[str | None] = mapped_column(Text)  # PEM of an RSA key's public part
    hsm_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class KvSecret(_Version, Base):
    """One version of a secret; ``value`` is sealed."""

    __tablename__ = "key_vault_secrets"
    __table_args__ = (UniqueConstraint("vault_id", "name", "version", name="uq_key_vault_secrets_version"),)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(255))


class KvAccessPolicy(Base):
    """What one principal may do with a vault's keys and secrets (the data plane)."""

    __tablename__ = "key_vault_access_policies"
    __table_args__ = (UniqueConstraint("vault_id", "principal_id", name="uq_key_vault_access_policies_principal"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    vault_id: Mapped[str] = mapped_column(ForeignKey("key_vaults.id", ondelete="CASCADE"), index=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    key_permissions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    secret_permissions: Mapped[list[Any]] = mapped_column(JSON, default=list)

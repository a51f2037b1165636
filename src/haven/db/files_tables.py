"""File recovery's audit table: one row per download of a file or folder from a recovery point.

Rows keep names and ids as plain text (no foreign keys): the record of who took what stays after
the vault, the VM or the principal is gone.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from haven.db.base import Base
from haven.db.types import new_id

__all__ = ["FileDownload"]


class FileDownload(Base):
    __tablename__ = "file_downloads"
    __table_args__ = (Index("ix_file_downloads_vault_started", "vault_id", "started_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(String(32))
    vault_id: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[str] = mapped_column(String(32))
    vm: Mapped[str] = mapped_column(String(128))
    point_id: Mapped[str] = mapped_column(String(64))
    disk: Mapped[str] = mapped_column(String(64))
    volume: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    #: file | folder
    kind: Mapped[str] = mapped_column(String(16))
    #: the byte range asked for ("bytes=0-99"), if any
    range: Mapped[str | None] = mapped_column(String(100))
    principal_id: Mapped[str] = mapped_column(String(32))
    principal_name: Mapped[str] = mapped_column(String(200))
    #: Started, then Completed, Failed (the stream broke off) or Aborted (the client went away)
    status: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

"""The declarative ``Base`` every table of the metadata store maps on, and the id column they share.

Modules that define tables import this, never each other; :mod:`haven.db.schema` imports them all
so that ``Base.metadata`` holds every table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from haven.db.types import UTCDateTime, new_id

__all__ = ["Base", "id_column"]


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def id_column() -> Mapped[str]:
    """A 32-hex-digit primary key, made on insert."""
    return mapped_column(String(32), primary_key=True, default=new_id)

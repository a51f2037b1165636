"""What a listing shows of one file-system entry."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Entry", "FILE", "DIR", "SYMLINK", "OTHER", "kind_of_mode"]

FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"


def kind_of_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISREG(mode):
        return FILE
    return OTHER


@dataclass(frozen=True)
class Entry:
    """One entry: ``mode`` holds the permission bits only (``type`` says what it is); ``target`` is
    a symlink's target as stored; ``mtime`` is UTC (FAT stores local time without a zone: read as UTC)."""

    name: str
    path: str
    type: str
    size: int
    mode: int
    uid: int | None
    gid: int | None
    mtime: datetime | None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: its deep copy of every field took most of a 10,000-entry listing
        return {"name": self.name, "path": self.path, "type": self.type, "size": self.size, "mode": self.mode, "uid": self.uid,
                "gid": self.gid, "mtime": self.mtime, "target": self.target}

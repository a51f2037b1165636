"""The vault's layout on storage and the manifest/config documents (docs/storage-format.md)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .codec import ID_LEN, ZERO_ID
from .errors import InvalidObjectName

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_CHUNK_SIZE",
    "CONFIG",
    "VAULT_INFO",
    "GC_PENDING",
    "chunk_name",
    "chunk_id_from_name",
    "point_name",
    "points_prefix",
    "check_id",
    "DiskManifest",
    "PointManifest",
    "PointInfo",
]

FORMAT_NAME = "haven-vault"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20

CONFIG = "config"
VAULT_INFO = "meta/vault"
GC_PENDING = "gc/pending"
CHUNKS = "chunks/"
POINTS = "points/"
LOCKS = "locks/"
QUARANTINE = "quarantine/"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def check_id(value: str, what: str) -> str:
    """Item, point and disk ids become object-name segments: letters, digits, '.', '_', '-'."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidObjectName(what=what, name=value)
    return value


def chunk_name(chunk_id: bytes) -> str:
    h = chunk_id.hex()
    return f"{CHUNKS}{h[:2]}/{h}"


def chunk_id_from_name(name: str) -> bytes | None:
    """The id of a ``chunks/xx/<hex>`` object name, or None if the name is not a chunk's."""
    if not name.startswith(CHUNKS):
        return None
    h = name.rsplit("/", 1)[-1]
    return bytes.fromhex(h) if _HEX.match(h) and name == chunk_name(bytes.fromhex(h)) else None


def points_prefix(item_id: str | None = None) -> str:
    return POINTS if item_id is None else f"{POINTS}{check_id(item_id, 'Item id')}/"


def point_name(item_id: str, point_id: str) -> str:
    return f"{points_prefix(item_id)}{check_id(point_id, 'Recovery point id')}"


@dataclass
class DiskManifest:
    """One disk of a recovery point: its size, source format and ordered chunk table."""

    name: str
    size: int
    format: str
    chunk_size: int
    chunks: list[bytes] = field(default_factory=list)  # ZERO_ID for an all-zero chunk

    def chunk_range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(self.size, start + self.chunk_size)

    def stored_ids(self) -> set[bytes]:
        return {c for c in self.chunks if c != ZERO_ID}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "format": self.format,
            "chunk_size": self.chunk_size,
            "chunks": base64.b64encode(b"".join(self.chunks)).decode(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DiskManifest":
        table = base64.b64decode(d["chunks"])
        if len(table) % ID_LEN:
            raise ValueError("chunk table length is not a multiple of the id length")
        chunks = [table[i : i + ID_LEN] for i in range(0, len(table), ID_LEN)]
        if not isinstance(d["name"], str) or not _ID.match(d["name"]):  # it names files on restore
            raise ValueError(f"disk name {str(d['name'])[:100]!r} is not a valid disk name")
        disk = cls(d["name"], int(d["size"]), d["format"], int(d["chunk_size"]), chunks)
        expected = -(-disk.size // disk.chunk_size) if disk.chunk_size else 0
        if len(chunks) != expected:
            raise ValueError(f"disk {disk.name}: {len(chunks)} chunks for size {disk.size}, expected {expected}")
        return disk


@dataclass
class PointManifest:
    """A recovery point: what Haven gave (``meta``), when, from which parent, and its disks."""

    item_id: str
    point_id: str
    created: datetime
    meta: dict[str, Any]
    disks: list[DiskManifest]
    parent_point_id: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def disk(self, name: str) -> DiskManifest | None:
        return next((d for d in self.disks if d.name == name), None)

    def stored_ids(self) -> set[bytes]:
        out: set[bytes] = set()
        for d in self.disks:
            out |= d.stored_ids()
        return out

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "item_id": self.item_id,
            "point_id": self.point_id,
            "created": self.created.isoformat(),
            "parent_point_id": self.parent_point_id,
            "meta": self.meta,
            "stats": self.stats,
            "disks": [d.to_json() for d in self.disks],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "PointManifest":
        d = json.loads(raw)
        if d.get("format") != FORMAT_NAME or d.get("version") != FORMAT_VERSION:
            raise ValueError("not a version-1 Haven manifest")
        return cls(
            item_id=d["item_id"],
            point_id=d["point_id"],
            created=datetime.fromisoformat(d["created"]),
            meta=d["meta"],
            disks=[DiskManifest.from_json(x) for x in d["disks"]],
            parent_point_id=d.get("parent_point_id"),
            stats=d.get("stats", {}),
        )

    def info(self) -> "PointInfo":
        return PointInfo(
            item_id=self.item_id,
            point_id=self.point_id,
            created=self.created,
            parent_point_id=self.parent_point_id,
            disks={d.name: d.size for d in self.disks},
            stats=dict(self.stats),
        )


@dataclass(frozen=True)
class PointInfo:
    """A recovery point as listed: ids, time, parent, disk sizes and backup statistics."""

    item_id: str
    point_id: str
    created: datetime
    parent_point_id: str | None
    disks: dict[str, int]
    stats: dict[str, Any]

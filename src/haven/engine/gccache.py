"""GC's chunk-list cache: for each manifest it has read, the chunk ids it references.

Manifests are immutable once written (a point id is never reused: Haven's are random UUIDs), so a
manifest's chunk list never changes and GC need only read the manifests that are new since its
last run. Each entry is keyed by the manifest's object name *and* its stored size, and carries a
keyed MAC (the vault's MAC key) over the vault, name, size and ids: an entry that does not match
the listed object, was damaged, or belongs to another vault is ignored and the manifest is read
again. A missing entry is a read, never a guess. The cache lives on the server (a SQLite file per
vault under ``$HAVEN_HOME/cache/``); losing it costs one full read, nothing else.

``cached_at`` (when the manifest was first read) also tells GC that the point's chunks existed by
then, which lets it reclaim the chunks of points deleted since while a backup runs (``gc.py``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from .codec import ID_LEN

__all__ = ["ChunkListCache", "NoCache", "SqliteChunkListCache"]


class ChunkListCache:
    """The interface GC uses; this base class caches nothing."""

    def get(self, name: str, size: int) -> set[bytes] | None:
        return None

    def put(self, name: str, size: int, ids: set[bytes], cached_at: datetime) -> None:
        pass

    def flush(self) -> None:
        pass

    def names(self) -> set[str]:
        return set()

    def entry(self, name: str) -> tuple[set[bytes], datetime] | None:
        return None

    def forget(self, names: Iterable[str]) -> None:
        pass

    def close(self) -> None:
        pass


NoCache = ChunkListCache


class SqliteChunkListCache(ChunkListCache):
    def __init__(self, path: Path | str, mac, vault_uuid: str):
        self._mac, self._vault = mac, vault_uuid
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS points (name TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                         " cached_at TEXT NOT NULL, chunks BLOB NOT NULL, mac TEXT NOT NULL)")
        self._db.commit()

    def _sign(self, name: str, size: int, blob: bytes, cached_at: str) -> str:
        head = "\0".join(("haven-gc-chunk-list-v1", self._vault, name, str(size), cached_at)).encode()
        return self._mac(head + b"\0" + blob)

    def _row(self, name: str) -> tuple[int, bytes, str] | None:
        row = self._db.execute("SELECT size, chunks, cached_at, mac FROM points WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        size, blob, cached_at, mac = row
        if len(blob) % ID_LEN or self._sign(name, size, blob, cached_at) != mac:
            return None
        return size, blob, cached_at

    @staticmethod
    def _ids(blob: bytes) -> set[bytes]:
        return {blob[i : i + ID_LEN] for i in range(0, len(blob), ID_LEN)}

    def get(self, name: str, size: int) -> set[bytes] | None:
        row = self._row(name)
        if row is None or row[0] != size:
            return None
        return self._ids(row[1])

    def entry(self, name: str) -> tuple[set[bytes], datetime] | None:
        row = self._row(name)
        return None if row is None else (self._ids(row[1]), datetime.fromisoformat(row[2]))

    def put(self, name: str, size: int, ids: set[bytes], cached_at: datetime) -> None:
        blob, when = b"".join(sorted(ids)), cached_at.isoformat()
        self._db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)",
                         (name, size, when, blob, self._sign(name, size, blob, when)))

    def flush(self) -> None:
        self._db.commit()

    def names(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM points")}

    def forget(self, names: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM points WHERE name = ?", [(n,) for n in names])
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

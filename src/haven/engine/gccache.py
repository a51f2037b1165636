"""GC's chunk-list cache: for each manifest it has read, the chunk ids it references.

A manifest's chunk list is a function of its bytes, so GC need only read the manifests it has not
read before. Each entry is keyed by the manifest's object name, its stored size *and* its listed
``version`` (the store's ETag, or a folder file's inode and mtime: a token that changes whenever the
object is written again), and carries a keyed MAC (the vault's MAC key) over the vault, name, size,
version and ids. An entry that does not match the listed object (a manifest rewritten in place, by a
repair say, or written again under the same name), was damaged, or belongs to another vault is
ignored and the manifest is read again; so is every manifest of a store that lists no versions. A
missing entry is a read, never a guess. The cache lives on the server (a SQLite file per vault under
``$HAVEN_HOME/cache/``); losing it costs one full read, nothing else.

``cached_at`` (when the manifest was first read) also tells GC that the point's chunks existed by
then, which lets it reclaim the chunks of points deleted since while a backup runs (``gc.py``).
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from .codec import ID_LEN

__all__ = ["ChunkListCache", "NoCache", "SqliteChunkListCache"]


class ChunkListCache:
    """The interface GC uses; this base class caches nothing."""

    def get(self, name: str, size: int, version: str | None) -> set[bytes] | None:
        return None

    def put(self, name: str, size: int, version: str | None, ids: set[bytes], cached_at: datetime) -> None:
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

_Row = tuple[int, str, str, bytes, str]  # size, version ("" = none listed), cached_at, chunks, mac


class SqliteChunkListCache(ChunkListCache):
    def __init__(self, path: Path | str, mac, vault_uuid: str):
        self._mac, self._vault = mac, vault_uuid
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("DROP TABLE IF EXISTS points")  # the first layout: keyed by name and size only
        self._db.execute("CREATE TABLE IF NOT EXISTS manifests (name TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                         " version TEXT NOT NULL, cached_at TEXT NOT NULL, chunks BLOB NOT NULL, mac TEXT NOT NULL)")
        self._db.commit()
        self._rows: dict[str, _Row] | None = None

    def _sign(self, name: str, size: int, version: str, blob: bytes, cached_at: str) -> str:
        head = "\0".join(("haven-gc-chunk-list-v2", self._vault, name, str(size), version, cached_at)).encode()
        return self._mac(head + b"\0" + blob)

    def _all(self) -> dict[str, _Row]:
        if self._rows is None:  # one query per run, not one per manifest
            self._rows = {r[0]: r[1:] for r in self._db.execute("SELECT name, size, version, cached_at, chunks, mac FROM manifests")}
        return self._rows

    def _row(self, name: str) -> _Row | None:
        row = self._all().get(name)
        if row is None:
            return None
        size, version, cached_at, blob, mac = row
        if not isinstance(blob, bytes) or len(blob) % ID_LEN or not hmac.compare_digest(self._sign(name, size, version, blob, cached_at), str(mac)):
            return None
        return row

    @staticmethod
    def _ids(blob: bytes) -> set[bytes]:
        return {blob[i : i + ID_LEN] for i in range(0, len(blob), ID_LEN)}

    def get(self, name: str, size: int, version: str | None) -> set[bytes] | None:
        if not version:  # nothing tells a rewrite apart: read the manifest
            return None
        row = self._row(name)
        if row is None or row[0] != size or row[1] != version:
            return None
        return self._ids(row[3])

    def entry(self, name: str) -> tuple[set[bytes], datetime] | None:
        row = self._row(name)
        return None if row is None else (self._ids(row[3]), datetime.fromisoformat(row[2]))

    def put(self, name: str, size: int, version: str | None, ids: set[bytes], cached_at: datetime) -> None:
        blob, when, version = b"".join(sorted(ids)), cached_at.isoformat(), version or ""
        row = (size, version, when, blob, self._sign(name, size, version, blob, when))
        self._db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?, ?)", (name, *row))
        self._all()[name] = row

    def flush(self) -> None:
        self._db.commit()

    def names(self) -> set[str]:
        return set(self._all())

    def forget(self, names: Iterable[str]) -> None:
        names = list(names)
        self._db.executemany("DELETE FROM manifests WHERE name = ?", [(n,) for n in names])
        self._db.commit()
        for n in names:
            self._all().pop(n, None)

    def close(self) -> None:
        self._db.commit()
        self._db.close()

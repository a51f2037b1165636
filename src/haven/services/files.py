"""File recovery straight from the vault: list, download and find files of a VM's recovery points.

The server reads the point's disk through the engine (every chunk authenticated, a shared chunk
cache bounded in bytes) and its file systems through ``haven.browse``; nothing is mounted. Browsing
needs Operator on the vault's subscription (the role a restore needs); every download is recorded
in ``file_downloads`` (who, point, path, bytes) before its first byte leaves, and finished with the
bytes actually sent.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tarfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import select

from haven.browse import DIR, FILE, SYMLINK, Entry, FileSystem, find_volumes, normalise, open_filesystem, open_volume
from haven.browse.luks import Keys
from haven.browse.errors import BrowseLimitReached, FileSystemCorrupt, NotADirectory, PathNotFound
from haven.db.files_tables import FileDownload
from haven.db.models import RecoveryPoint
from haven.domain.enums import ProtectionState, Role
from haven.engine.reader import ChunkCache, DiskImage
from haven.errors import Forbidden, NotFound, UserError
from haven.services.auth import Caller
from haven.services.paging import Keyset
from haven.services.points import PointSoftDeleted

__all__ = ["FileService", "Download", "files_service", "satisfiable", "DiskNameInvalid", "FindPatternInvalid", "RangeNotSatisfiable"]

CACHE_BYTES = 256 << 20
BLOCK = 1 << 20
MAX_FIND_RESULTS = 1000
MAX_TAR_ENTRIES = 500_000
HASH_CHARS = 12


#: newest first; the id breaks ties
DOWNLOADS = Keyset("file-downloads", ((FileDownload.started_at, True), (FileDownload.id, True)))

class DiskNameInvalid(UserError):
    code = "UserErrorFileDiskNotFound"
    message = "Recovery point {point!r} has no disk {disk!r}; it has {disks}."
    recommendation = "Pick a disk from the recovery point's disk list (haven recoverypoint show), e.g. --disk {first}."


class FindPatternInvalid(UserError):
    code = "UserErrorFindPatternInvalid"
    message = "The name pattern {pattern!r} is invalid: {reason}"
    recommendation = "Give a file name or a shell pattern of 1 to 255 characters without '/', e.g. 'nginx.conf' or '*.conf'."


class RangeNotSatisfiable(UserError):
    code = "UserErrorRangeNotSatisfiable"
    message = "The byte range asked for lies outside {path!r} ({size} bytes)."
    recommendation = "Ask for bytes between 0 and {last}, e.g. 'Range: bytes=0-{last}'."


def satisfiable(byte_range: tuple[int | None, int | None], size: int, path: str) -> tuple[int, int]:
    """(first, last) inclusive within ``size`` for an HTTP range: (a, b), (a, None) or the suffix (None, n)."""
    first, last = byte_range
    if first is None:
        if not last:
            raise RangeNotSatisfiable(path=path, size=size, last=max(0, size - 1))
        first, last = max(0, size - last), size - 1
    elif last is None or last >= size:
        last = size - 1
    if first >= size or first > last or first < 0:
        raise RangeNotSatisfiable(path=path, size=size, last=max(0, size - 1))
    return first, last


@dataclass
class Download:
    """What the API streams: ``body`` yields the bytes; the audit row is finished when it ends."""

    name: str
    kind: str  # file | folder
    size: int | None  # None for a folder (a tar stream)
    entry: Entry
    body: Iterator[bytes]


class FileService:
    def __init__(self, core, cache_bytes: int = CACHE_BYTES):
        self.core = core
        self.cache = ChunkCache(max_bytes=cache_bytes)

    # ---- lookups
    def _point(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str):
        with self.core.db.session() as s:
            vault, item, point = self.core.points.find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)
            if item.state == ProtectionState.SOFT_DELETED.value:
                raise PointSoftDeleted(vm=vm)
            for row in (vault, item, point):
                s.expunge(row)
        return vault, item, point

    def _image(self, vault, item, point, disk: str | None) -> DiskImage:
        names = [d["name"] for d in point.disks]
        chosen = disk or (names[0] if names else "")
        if chosen not in names:
            raise DiskNameInvalid(point=point.id, disk=chosen, disks=", ".join(names) or "none", first=names[0] if names else "vda")
        repo = self.core.storage.open(vault)
        return DiskImage(repo, item.id, point.id, chosen, cache=self.cache)

    def _keys(self, caller: Caller, vault, item, point, disk: str, strict: bool = True) -> Keys:
        """The disk's LUKS keys (BEKs) the point carries, asked only when a LUKS volume is met: the caller
        needs what restoring them needs (``restore`` on the key vault's keys and secrets). Not ``strict``
        (a volume listing): without that access the volume is shown locked instead of refused."""
        def keys() -> list[bytes]:
            backup = self.core.storage.open(vault).load_point(item.id, point.id).meta or {}
            try:
                return self.core.keyvault.disk_keys_from_backup(backup.get("key_backup"), caller, disk)
            except (Forbidden, NotFound):
                if strict:
                    raise
                return []
        return keys

    def _fs(self, caller: Caller, vault, item, point, disk: str | None, volume: str | None) -> FileSystem:
        image = self._image(vault, item, point, disk)
        return open_volume(image, volume, keys=self._keys(caller, vault, item, point, image.name))

    # ---- use cases
    def volumes(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str, disk: str | None = None) -> dict:
        vault, item, point = self._point(caller, subscription, vault_name, vm, point_id)
        image = self._image(vault, item, point, disk)
        keys = self._keys(caller, vault, item, point, image.name, strict=False)
        return {"vm": vm, "recovery_point": point.id, "disk": image.name, "size": image.size,
                "volumes": [v.to_dict() for v in find_volumes(image, keys)]}

    def list(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str, path: str = "/",
             disk: str | None = None, volume: str | None = None) -> dict:
        path = normalise(path)
        vault, item, point = self._point(caller, subscription, vault_name, vm, point_id)
        fs = self._fs(caller, vault, item, point, disk, volume)
        entries = fs.list(path)
        return {"vm": vm, "recovery_point": point.id, "disk": fs.disk, "volume": fs.volume, "filesystem": fs.kind,
                "path": path, "entries": [e.to_dict() for e in entries]}

    def stat(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str, path: str,
             disk: str | None = None, volume: str | None = None) -> dict:
        vault, item, point = self._point(caller, subscription, vault_name, vm, point_id)
        return self._fs(caller, vault, item, point, disk, volume).stat(path).to_dict()

    def download(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str, path: str,
                 disk: str | None = None, volume: str | None = None, byte_range: tuple[int | None, int | None] | None = None,
                 range_text: str | None = None) -> Download:
        """A file (``byte_range``: first and last byte, inclusive, either may be None as in HTTP) or a folder as a tar stream (modes, owners,
        times, symlinks and hard links kept). The audit row is written before this returns."""
        path = normalise(path)
        vault, item, point = self._point(caller, subscription, vault_name, vm, point_id)
        fs = self._fs(caller, vault, item, point, disk, volume)
        entry = fs.stat(path, follow=True)
        if entry.type == DIR:
            # the whole tree's metadata first: a loop or a limit is a typed error before the first byte goes out
            plan = list(fs.walk(path, max_entries=MAX_TAR_ENTRIES))
            kind, body, size = "folder", self._tar(fs, path, plan), None
        else:
            entry, stream = fs.open(path)
            first, last = satisfiable(byte_range, entry.size, path) if byte_range else (0, entry.size - 1)
            kind, size = "file", max(0, last - first + 1)
            body = self._file(fs, stream, first, size)
        audit = self._record(caller, vault, item, vm, point, fs, path, kind, range_text)
        name = (path.rstrip("/").rsplit("/", 1)[-1] or fs.volume.replace("/", "-")) + (".tar" if kind == "folder" else "")
        return Download(name, kind, size, entry, self._audited(audit, body))

    def find(self, caller: Caller, subscription: str, vault_name: str, vm: str, pattern: str, all_points: bool = False,
             point_id: str | None = None, disk: str | None = None, path: str = "/") -> dict:
        """Files whose name matches ``pattern`` (a shell pattern) in the latest point, the point
        given, or every point: each with its size, mtime and a short SHA-256 of its content."""
        if not isinstance(pattern, str) or not (1 <= len(pattern) <= 255) or "/" in pattern or "\x00" in pattern:
            raise FindPatternInvalid(pattern=str(pattern)[:100], reason="it must be 1 to 255 characters without '/' or NUL.")
        path = normalise(path)
        with self.core.db.session() as s:
            vault, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm, Role.OPERATOR)
            if item.state == ProtectionState.SOFT_DELETED.value:
                raise PointSoftDeleted(vm=vm)
            q = select(RecoveryPoint).where(RecoveryPoint.item_id == item.id).order_by(RecoveryPoint.time.desc())
            if point_id:
                points = [self.core.points.find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)[2]]
            else:
                points = list(s.scalars(q).all())
                points = points if all_points else points[:1]
            for row in (vault, item, *points):
                s.expunge(row)
        hits: list[dict] = []
        searched = []
        for point in points:
            searched.append(point.id)
            for d in point.disks:
                if disk and d["name"] != disk:
                    continue
                image = self._image(vault, item, point, d["name"])
                keys = self._keys(caller, vault, item, point, d["name"])
                for vol in find_volumes(image, keys):
                    if vol.filesystem in (None, "luks", "lvm"):
                        continue
                    fs = open_filesystem(vol.open(), image.name, vol.id, point=point.id)
                    try:
                        for entry, node in fs.search(path, lambda name: fnmatch.fnmatchcase(name, pattern)):
                            if len(hits) >= MAX_FIND_RESULTS:
                                raise BrowseLimitReached(what="find", limit=f"{MAX_FIND_RESULTS} matches", path=path)
                            hits.append({"recovery_point": point.id, "time": point.time, "disk": d["name"], "volume": vol.id,
                                         "path": entry.path, "size": entry.size, "mtime": entry.mtime,
                                         "sha256": self._hash(fs, node, entry)})
                    except (PathNotFound, NotADirectory):
                        continue  # the folder is not on this volume: no match here
        return {"vm": vm, "pattern": pattern, "searched_points": searched, "matches": hits}

    def downloads(self, caller: Caller, subscription: str, vault_name: str, vm: str | None = None, limit: int = 200,
                  cursor: str | None = None) -> tuple[list[dict], str | None]:
        """The vault's download audit, newest first, ``limit`` at a time (Reader may see who took what)."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.READER)
            q = select(FileDownload).where(FileDownload.vault_id == vault.id)
            if vm:
                q = q.where(FileDownload.vm == vm)
            rows, following = DOWNLOADS.page(s, q, limit, cursor, lambda r: (r.started_at, r.id))
            return [_audit_view(r) for r in rows], following

    # ---- streams
    def _hash(self, fs: FileSystem, node, entry: Entry) -> str:
        h = hashlib.sha256()
        for block in self._file(fs, fs.open_node(node, entry.path), 0, entry.size):
            h.update(block)
        return h.hexdigest()[:HASH_CHARS]

    @staticmethod
    def _file(fs: FileSystem, stream: BinaryIO, first: int, size: int) -> Iterator[bytes]:
        stream.seek(first)
        left = size
        while left > 0:
            block = stream.read(min(BLOCK, left))
            if not block:
                raise FileSystemCorrupt(fs=fs.kind, volume=fs.volume, disk=fs.disk, reason="a file ended before its size")
            yield block
            left -= len(block)

    def _tar(self, fs: FileSystem, path: str, plan: list) -> Iterator[bytes]:
        base = path.rstrip("/")
        top = base.rsplit("/", 1)[-1] or fs.volume.replace("/", "-")
        links: dict[Any, str] = {}
        for entry, node in plan:
            rel = top + entry.path[len(base):] if base else top + entry.path
            info = tarfile.TarInfo(rel)
            info.mode = entry.mode
            info.uid, info.gid = entry.uid or 0, entry.gid or 0
            info.mtime = entry.mtime.timestamp() if entry.mtime else 0
            if entry.type == DIR:
                info.type = tarfile.DIRTYPE
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            elif entry.type == SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, entry.target or ""
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            elif entry.type == FILE:
                with fs.guarded():
                    key = fs._k.key(node)
                if fs.kind not in ("fat",) and key in links:
                    info.type, info.linkname = tarfile.LNKTYPE, links[key]
                    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                    continue
                links[key] = rel
                info.size = entry.size
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                yield from self._file(fs, fs.open_node(node, entry.path), 0, entry.size)
                pad = -entry.size % tarfile.BLOCKSIZE
                if pad:
                    yield bytes(pad)
        yield bytes(2 * tarfile.BLOCKSIZE)

    # ---- audit
    def _record(self, caller: Caller, vault, item, vm: str, point, fs: FileSystem, path: str, kind: str, range_text: str | None) -> str:
        with self.core.db.session() as s:
            row = FileDownload(subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id, vm=vm, point_id=point.id,
                               disk=fs.disk, volume=fs.volume, path=path, kind=kind, range=range_text, principal_id=caller.principal_id,
                               principal_name=caller.name, status="Started", bytes=0, started_at=self.core.clock.now())
            s.add(row)
            s.flush()
            return row.id

    def _finish(self, audit_id: str, status: str, sent: int) -> None:
        with self.core.db.session() as s:
            row = s.get(FileDownload, audit_id)
            if row is not None:
                row.status, row.bytes, row.finished_at = status, sent, self.core.clock.now()

    def _audited(self, audit_id: str, body: Iterator[bytes]) -> Iterator[bytes]:
        sent = 0
        status = "Aborted"
        try:
            for block in body:
                yield block
                sent += len(block)
            status = "Completed"
        except GeneratorExit:
            status = "Aborted"
            raise
        except Exception:
            status = "Failed"
            raise
        finally:
            self._finish(audit_id, status, sent)


def _audit_view(r: FileDownload) -> dict:
    return {"id": r.id, "vm": r.vm, "recovery_point": r.point_id, "disk": r.disk, "volume": r.volume, "path": r.path,
            "kind": r.kind, "range": r.range, "principal": r.principal_name, "principal_id": r.principal_id, "status": r.status,
            "bytes": r.bytes, "started_at": r.started_at, "finished_at": r.finished_at}


_services: "weakref.WeakKeyDictionary[Any, FileService]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def files_service(core) -> FileService:
    """The process's one ``FileService`` for ``core`` (its chunk cache is shared by every request)."""
    with _lock:
        service = _services.get(core)
        if service is None:
            service = _services[core] = FileService(core)
        return service

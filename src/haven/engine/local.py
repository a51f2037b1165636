"""A vault in a local folder: one file per object, written to a temporary name, fsynced, renamed.

Objects leave the page cache once written or read: a vault is written far more than it is read, and
a backup should not push the host's (and its VMs') useful pages out."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from .backend import Backend, ObjectInfo, check_name, check_prefix
from .errors import InvalidObjectName, StorageObjectNotFound, StorageRequestRejected, StorageUnavailable, StorageVaultFull
from .pagecache import drop_pages

__all__ = ["LocalBackend"]

_TMP_SUFFIX = ".tmp-"
#: errno values that may pass (interrupted, I/O hiccup on a network mount).
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EIO, errno.ETIMEDOUT, errno.EBUSY}
#: no space or quota left: only someone making room helps, never a retry.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _raise(exc: OSError, name: str, op: str) -> None:
    detail = f"{op} {name}: {exc.strerror or exc}"
    if exc.errno in _FULL_ERRNOS:
        raise StorageVaultFull(detail=detail) from exc
    if exc.errno in _TRANSIENT_ERRNOS:
        raise StorageUnavailable(detail=detail) from exc
    raise StorageRequestRejected(detail=detail) from exc


class LocalBackend(Backend):
    """Objects are files under ``root``; ``a/b/c`` is ``root/a/b/c``."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True):
        self.root = Path(root)
        self.location = f"file://{self.root}"
        self._fsync = fsync
        self._made: set[Path] = set()
        self._lock = threading.Lock()

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise(exc, str(self.root), "mkdir")

    def _path(self, name: str) -> Path:
        return self._inside(self.root / check_name(name), name)

    def _inside(self, path: Path, name: str) -> Path:
        """``path`` if, with every symlink resolved, it is still under the (resolved) root.

        ``check_name`` already refuses ``..`` and absolute names; this is the second wall, for a
        symlink planted in the vault folder or a check that a future change weakens."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise InvalidObjectName(what="Object name", name=name)
        return path

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._made:
            return
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self._fsync_dir(folder.parent)
        with self._lock:
            self._made.add(folder)

    def _fsync_dir(self, folder: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def store(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.with_name(f"{path.name}{_TMP_SUFFIX}{uuid.uuid4().hex[:12]}")
        try:
            if not self.root.is_dir():
                raise StorageRequestRejected(detail=f"vault folder {self.root} does not exist")
            self._ensure_dir(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self._fsync:
                    os.fsync(fd)
                    drop_pages(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir(path.parent)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            _raise(exc, name, "write")

    def load(self, name: str) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
                drop_pages(fh.fileno())
                return data
        except FileNotFoundError as exc:
            raise StorageObjectNotFound(name=name) from exc
        except IsADirectoryError as exc:
            raise StorageObjectNotFound(name=name) from exc
        except OSError as exc:
            _raise(exc, name, "read")
            raise  # unreachable

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the folder the prefix names, then filter by the rest of the prefix.
        folder, _, _ = check_prefix(prefix).rpartition("/")
        start = self._inside(self.root / folder, prefix) if folder else self.root
        found: list[ObjectInfo] = []
        try:
            if not self.root.is_dir():
                raise StorageRequestRejected(detail=f"vault folder {self.root} does not exist")
            if start.is_dir():
                self._walk(start, folder, prefix, found)
        except OSError as exc:
            _raise(exc, prefix, "list")
        return iter(found)

    def _walk(self, folder: Path, rel: str, prefix: str, out: list[ObjectInfo]) -> None:
        # An object deleted between readdir and stat (a released lock, a chunk GC removed) is simply
        # not there any more: skip it, as a listing taken a moment later would.
        try:
            it = os.scandir(folder)
        except FileNotFoundError:
            return
        with it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if name.startswith(prefix) or prefix.startswith(name + "/"):
                            self._walk(Path(entry.path), name, prefix, out)
                    elif _TMP_SUFFIX not in entry.name and name.startswith(prefix):
                        st = entry.stat(follow_symlinks=False)  # every store is a new file renamed in place
                        out.append(ObjectInfo(name, st.st_size, f"{st.st_ino:x}.{st.st_mtime_ns:x}"))
                except FileNotFoundError:
                    continue

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            _raise(exc, name, "delete")

"""File systems read in pure Python through the Dissect libraries: ext2/3/4, XFS, Btrfs, NTFS, FAT.

``open_filesystem(fh, ...)`` recognises the file system by its magic and answers a ``FileSystem``:
``stat``, ``list``, ``open`` and ``walk`` by path, the same for every kind. Paths are resolved here
(symlinks followed at most ``MAX_SYMLINKS`` times), so every kind gets the same limits: folders
of at most ``MAX_ENTRIES`` entries, walks that never visit a folder twice (a loop in a damaged or
hostile image), files of at most ``MAX_FILE_SIZE`` bytes, and a deadline. Whatever a reader raises
on damaged metadata becomes ``FileSystemCorrupt``; the engine's own errors pass through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from haven.errors import HavenError

from .entry import DIR, FILE, SYMLINK, Entry
from .readers import READERS, Reader, detect
from .errors import (
    BrowseLimitReached,
    DirectoryLoop,
    DirectoryTooLarge,
    FileSystemCorrupt,
    NoFileSystem,
    NotADirectory,
    NotAFile,
    PathInvalid,
    PathNotFound,
    SizeAbsurd,
    SymlinkLoop,
)

__all__ = ["FileSystem", "open_filesystem", "detect", "normalise", "MAX_ENTRIES", "MAX_FILE_SIZE", "MAX_SYMLINKS", "KINDS"]

MAX_ENTRIES = 200_000
MAX_DIR_BYTES = 256 << 20
MAX_FILE_SIZE = 1 << 44  # 16 TiB: ext4's own limit with 4 KiB blocks
MAX_SYMLINKS = 40
MAX_DEPTH = 256
MAX_PATH = 4096
DEFAULT_DEADLINE = 120.0
KINDS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "fat")


def normalise(path: str) -> str:
    """``/a/b`` form of a user's path; ``PathInvalid`` for NUL, overlong or relative-escape paths."""
    if not isinstance(path, str) or "\x00" in path or len(path) > MAX_PATH:
        raise PathInvalid(path=str(path)[:100], reason="it holds a NUL character or is longer than 4096 characters.")
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        raise PathInvalid(path=path, reason="'..' is not allowed.")
    return "/" + "/".join(parts)


class FileSystem:
    """One file system, read through ``fh`` (a file object of its own: not shared between threads)."""

    def __init__(self, kind: Reader, disk: str, volume: str, deadline: float = DEFAULT_DEADLINE, point: str = ""):
        self._k = kind
        self.kind = kind.name
        self.disk, self.volume, self.point = disk, volume, point
        self._deadline = time.monotonic() + deadline
        self._budget = deadline

    # -- guards
    @contextmanager
    def guarded(self):
        """Any failure of the reader on the image's metadata becomes ``FileSystemCorrupt``."""
        try:
            yield
        except HavenError:
            raise
        except (RecursionError, MemoryError, OverflowError) as exc:
            raise FileSystemCorrupt(fs=self.kind, volume=self.volume, disk=self.disk, reason=type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - a damaged or hostile image: never an internal error
            reason = (str(exc) or type(exc).__name__).splitlines()[0][:300]
            raise FileSystemCorrupt(fs=self.kind, volume=self.volume, disk=self.disk, reason=reason) from None

    def _tick(self, path: str, what: str) -> None:
        if time.monotonic() > self._deadline:
            raise BrowseLimitReached(what=what, limit=f"{self._budget:.0f} s", path=path)

    # -- nodes
    def _entry(self, name: str, path: str, node) -> Entry:
        with self.guarded():
            kind, size, mode, uid, gid, mtime = self._k.info(node)
            target = self._k.link(node) if kind == SYMLINK else None
        return Entry(name, path, kind, int(size), int(mode), uid, gid, mtime, target)

    def _children(self, node, path: str) -> Iterator[tuple[str, Any]]:
        with self.guarded():
            if self._k.dir_bytes(node) > MAX_DIR_BYTES:
                raise DirectoryTooLarge(path=path, max=MAX_ENTRIES, size=self._k.dir_bytes(node))
            it = self._k.children(node)
            count = 0
            while True:
                try:
                    name, child = next(it)
                except StopIteration:
                    return
                if name in (".", "..") or not name or "/" in name or "\x00" in name:
                    continue
                count += 1
                if count > MAX_ENTRIES:
                    raise DirectoryTooLarge(path=path, max=MAX_ENTRIES, size="?")
                if count % 1024 == 0:
                    self._tick(path, "Reading the folder")
                yield name, child

    def _type(self, node) -> str:
        with self.guarded():
            return self._k.info(node)[0]

    def _resolve(self, path: str, follow: bool = True) -> tuple[str, Any]:
        """The node at ``path`` (symlinks in the middle always followed, the last one if ``follow``)."""
        path = normalise(path)
        with self.guarded():
            root = self._k.root()
        todo = [p for p in path.split("/") if p]
        stack: list[tuple[str, Any]] = [("", root)]  # (name, node) from the root down
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            name, node = stack[-1]
            shown = "/" + "/".join([n for n, _ in stack[1:]] + [part])
            if self._type(node) != DIR:
                raise NotADirectory(path="/" + "/".join(n for n, _ in stack[1:]))
            for child_name, child in self._children(node, shown):
                if child_name == part:
                    break
            else:
                raise PathNotFound(path=shown, volume=self.volume, disk=self.disk, point=self.point)
            if self._type(child) == SYMLINK and (todo or follow):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise SymlinkLoop(path=path, max=MAX_SYMLINKS)
                with self.guarded():
                    target = self._k.link(child)
                if "\x00" in target or len(target) > MAX_PATH:
                    raise PathNotFound(path=shown, volume=self.volume, disk=self.disk, point=self.point)
                if target.startswith("/"):
                    stack = [("", root)]
                todo = [p for p in target.split("/") if p and p != "."] + todo
                continue
            stack.append((part, child))
        return "/" + "/".join(n for n, _ in stack[1:]), stack[-1][1]

    # -- public
    def stat(self, path: str, follow: bool = False) -> Entry:
        real, node = self._resolve(path, follow)
        shown = normalise(path)
        return self._entry(shown.rsplit("/", 1)[-1] or "/", shown, node)

    def list(self, path: str = "/", limit: int = MAX_ENTRIES) -> list[Entry]:
        shown = normalise(path)
        _, node = self._resolve(shown, follow=True)
        if self._type(node) != DIR:
            raise NotADirectory(path=shown)
        base = shown.rstrip("/")
        out = []
        for name, child in self._children(node, shown):
            out.append(self._entry(name, f"{base}/{name}", child))
            if len(out) >= limit:
                break
        return sorted(out, key=lambda e: e.name)

    def open_node(self, node, path: str) -> BinaryIO:
        with self.guarded():
            size = self._k.info(node)[1]
        if size < 0 or size > MAX_FILE_SIZE:
            raise SizeAbsurd(path=path, size=size, max=MAX_FILE_SIZE)
        with self.guarded():
            return _Guarded(self._k.open(node), self, size)

    def open(self, path: str) -> tuple[Entry, BinaryIO]:
        """The entry (symlinks followed) and a stream of its bytes, for a file."""
        shown = normalise(path)
        _, node = self._resolve(shown, follow=True)
        entry = self._entry(shown.rsplit("/", 1)[-1] or "/", shown, node)
        if entry.type != FILE:
            raise NotAFile(path=shown, kind={DIR: "folder"}.get(entry.type, entry.type))
        with self.guarded():
            return entry, self.open_node(node, shown)

    def walk(self, path: str = "/", max_entries: int = 2_000_000) -> Iterator[tuple[Entry, Any]]:
        """Every entry under ``path`` (itself first), parents before children, never a folder twice."""
        shown = normalise(path)
        _, top = self._resolve(shown, follow=True)
        root_entry = self._entry(shown.rsplit("/", 1)[-1] or "/", shown, top)
        yield root_entry, top
        if root_entry.type != DIR:
            return
        for child_path, name, child, _ in self._descend(shown, top, max_entries):
            yield self._entry(name, child_path, child), child

    def search(self, path: str, match, max_entries: int = 2_000_000) -> Iterator[tuple[Entry, Any]]:
        """The files under ``path`` whose name ``match(name)`` accepts, each with its node: the walk of
        ``walk`` (same limits, a folder never twice) reading only the type of the other entries."""
        shown = normalise(path)
        _, top = self._resolve(shown, follow=True)
        if self._type(top) != DIR:
            raise NotADirectory(path=shown)
        for child_path, name, child, kind in self._descend(shown, top, max_entries):
            if kind == FILE and match(name):
                entry = self._entry(name, child_path, child)
                if entry.type == FILE:
                    yield entry, child

    def _descend(self, shown: str, top, max_entries: int) -> Iterator[tuple[str, str, Any, str]]:
        """(path, name, node, type) of every entry under the folder ``top``, depth first and in name order,
        within the walk's limits (entries, depth, a deadline) and never entering a folder twice."""
        with self.guarded():
            seen = {self._k.key(top)}
        stack = [(shown.rstrip("/"), top, 0)]
        count = 0
        while stack:
            base, node, depth = stack.pop()
            if depth >= MAX_DEPTH:
                raise BrowseLimitReached(what="Walking the folders", limit=f"{MAX_DEPTH} levels", path=base or "/")
            subdirs = []
            for name, child in sorted(self._children(node, base or "/"), key=lambda c: c[0]):
                count += 1
                if count > max_entries:
                    raise BrowseLimitReached(what="Walking the folders", limit=f"{max_entries} entries", path=shown)
                if count % 1024 == 0:
                    self._tick(shown, "Walking the folders")
                child_path = f"{base}/{name}"
                with self.guarded():
                    kind = self._k.kind(child)
                if kind == DIR:
                    with self.guarded():
                        key = self._k.key(child)
                    if key in seen:
                        raise DirectoryLoop(path=child_path)
                    seen.add(key)
                    subdirs.append((child_path, child, depth + 1))
                yield child_path, name, child, kind
            stack.extend(reversed(subdirs))


class _Guarded:
    """A reader's stream whose failures on damaged metadata become ``FileSystemCorrupt``."""

    def __init__(self, inner: BinaryIO, fs: FileSystem, size: int):
        self._inner, self._fs, self.size = inner, fs, size

    def read(self, n: int = -1) -> bytes:
        with self._fs.guarded():
            return self._inner.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._fs.guarded():
            return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        pass


def open_filesystem(fh: BinaryIO, disk: str, volume: str, deadline: float = DEFAULT_DEADLINE, point: str = "") -> FileSystem:
    """The file system at the start of ``fh``; ``NoFileSystem`` if there is none Haven reads."""
    try:
        kind = detect(fh)
    except HavenError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable start of the volume
        kind = None
    if kind not in READERS:
        raise NoFileSystem(volume=volume, disk=disk)
    try:
        k = READERS[kind](fh)
    except HavenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile superblock
        reason = (str(exc) or type(exc).__name__).splitlines()[0][:300]
        raise FileSystemCorrupt(fs=kind, volume=volume, disk=disk, reason=reason) from None
    return FileSystem(k, disk, volume, deadline, point)


"""File systems read in pure Python through the Dissect libraries: ext2/3/4, XFS, Btrfs, NTFS, FAT.

``open_filesystem(fh, ...)`` recognises the file system by its magic and answers a ``FileSystem``:
``stat``, ``list``, ``open`` and ``walk`` by path, the same for every kind. Paths are resolved here
(symlinks followed at most ``MAX_SYMLINKS`` times), so every kind gets the same limits: folders
of at most ``MAX_ENTRIES`` entries, walks that never visit a folder twice (a loop in a damaged or
hostile image), files of at most ``MAX_FILE_SIZE`` bytes, and a deadline. Whatever a reader raises
on damaged metadata becomes ``FileSystemCorrupt``; the engine's own errors pass through.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, BinaryIO

from haven.errors import HavenError

from .entry import DIR, FILE, SYMLINK, Entry, kind_of_mode
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


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# ---------------------------------------------------------------------------------------------- kinds


class _Kind:
    """The few things each library answers differently. ``node`` is the library's own object."""

    name = "?"

    def __init__(self, fh: BinaryIO):
        self.fh = fh

    def root(self) -> Any: ...
    def children(self, node) -> Iterator[tuple[str, Any]]: ...
    def info(self, node) -> tuple[str, int, int, int | None, int | None, datetime | None]: ...  # type, size, mode, uid, gid, mtime
    def link(self, node) -> str: ...
    def open(self, node) -> BinaryIO: ...
    def key(self, node) -> Hashable: ...

    def dir_bytes(self, node) -> int:
        return 0


class _Ext(_Kind):
    name = "ext"

    def __init__(self, fh):
        super().__init__(fh)
        from dissect.extfs import ExtFS

        self.fs = ExtFS(fh)
        self.name = {1: "ext2", 2: "ext3", 3: "ext4"}.get(getattr(self.fs, "type", 3), "ext4")

    def root(self):
        return self.fs.root

    def children(self, node):
        for child in node.iterdir():
            yield child.filename, child

    def info(self, node):
        i = node.inode
        uid = i.i_uid | (getattr(i, "i_uid_high", 0) << 16)
        gid = i.i_gid | (getattr(i, "i_gid_high", 0) << 16)
        return kind_of_mode(i.i_mode), node.size, stat.S_IMODE(i.i_mode), uid, gid, _utc(node.mtime)

    def link(self, node):
        return node.link

    def open(self, node):
        return node.open()

    def key(self, node):
        return node.inum

    def dir_bytes(self, node):
        return node.size


class _Xfs(_Kind):
    name = "xfs"

    def __init__(self, fh):
        super().__init__(fh)
        from dissect.xfs import XFS

        self.fs = XFS(fh)

    def root(self):
        return self.fs.root

    def children(self, node):
        for child in node.iterdir():
            yield child.filename, child

    def info(self, node):
        i = node.inode
        return kind_of_mode(i.di_mode), node.size, stat.S_IMODE(i.di_mode), i.di_uid, i.di_gid, _utc(node.mtime)

    def link(self, node):
        return node.link

    def open(self, node):
        return node.open()

    def key(self, node):
        return node.inum

    def dir_bytes(self, node):
        return node.size


class _Btrfs(_Kind):
    name = "btrfs"

    def __init__(self, fh):
        super().__init__(fh)
        from dissect.btrfs import Btrfs

        self.fs = Btrfs(fh)

    def root(self):
        return self.fs.get("/")

    @staticmethod
    def _inode(node):
        return node.root if hasattr(node, "root") and not hasattr(node, "mode") else node  # a subvolume: its root folder

    def children(self, node):
        for name, child in self._inode(node).iterdir():
            yield name, self._inode(child)

    def info(self, node):
        n = self._inode(node)
        return kind_of_mode(n.mode), n.size, stat.S_IMODE(n.mode), n.uid, n.gid, _utc(n.mtime)

    def link(self, node):
        return self._inode(node).link

    def open(self, node):
        return self._inode(node).open()

    def key(self, node):
        n = self._inode(node)
        return (id(n.subvolume) if hasattr(n, "subvolume") else 0, n.inum)


class _Ntfs(_Kind):
    name = "ntfs"

    def __init__(self, fh):
        super().__init__(fh)
        from dissect.ntfs import NTFS

        self.fs = NTFS(fh)

    def root(self):
        return self.fs.mft.get("")

    def children(self, node):
        root = node.segment == 5
        for name, child in node.listdir(dereference=True, ignore_dos=True).items():
            if root and name.startswith("$"):
                continue  # the file system's own metadata files
            yield name, child

    def info(self, node):
        si = node.attributes.STANDARD_INFORMATION
        mtime = _utc(si[0].last_modification_time) if si else None
        if node.is_symlink() or node.is_mount_point():
            return SYMLINK, 0, 0o777, None, None, mtime
        if node.is_dir():
            return DIR, 0, 0o755, None, None, mtime
        size = node.size() if node.has_stream("") else 0
        return FILE, size, 0o644, None, None, mtime

    def link(self, node):
        return node.reparse_point_substitute_name.replace("\\", "/")

    def open(self, node):
        return node.open()

    def key(self, node):
        return node.segment


class _Fat(_Kind):
    name = "fat"

    def __init__(self, fh):
        super().__init__(fh)
        from dissect.fat import fat

        self.fs = fat.FATFS(fh)

    def root(self):
        return self.fs.root

    @staticmethod
    def _name(entry) -> str:
        if entry.ldirents:
            return entry.name
        # short names only: Windows NT keeps "this base/extension is lower case" in two flag bits
        flags = getattr(entry.dirent, "DIR_NTRes", 0)
        base, dot, ext = entry.name.partition(".")
        return (base.lower() if flags & 0x08 else base) + dot + (ext.lower() if flags & 0x10 else ext)

    def children(self, node):
        for child in node.iterdir():
            if child.name in (".", "..") or child.is_volume_id():
                continue
            yield self._name(child), child

    def info(self, node):
        if node is self.fs.root or node.is_directory():
            return DIR, 0, 0o755, None, None, None if node is self.fs.root else _utc(node.mtime)
        return FILE, node.size, 0o644, None, None, _utc(node.mtime)

    def open(self, node):
        return node.open()

    def key(self, node):
        return "root" if node is self.fs.root else (node.cluster or id(node))


def _peek(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)


def detect(fh: BinaryIO) -> str | None:
    """The kind of file system (or ``luks``, ``lvm``) that starts at the beginning of ``fh``, by its magic."""
    head = _peek(fh, 0, 4096)
    if head[:6] == b"LUKS\xba\xbe":
        return "luks"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if b"LABELONE" in (head[512:520], head[0:8]) and b"LVM2" in head[512:1024]:
        return "lvm"
    if head[1080:1082] == b"\x53\xef":
        compat, incompat = int.from_bytes(head[1116:1120], "little"), int.from_bytes(head[1120:1124], "little")
        return "ext4" if incompat & 0x40 else "ext3" if compat & 0x4 else "ext2"
    if _peek(fh, 0x10040, 8) == b"_BHRfS_M":
        return "btrfs"
    if head[510:512] == b"\x55\xaa" and (head[54:59] == b"FAT12" or head[54:59] == b"FAT16" or head[82:87] == b"FAT32"):
        return "fat"
    return None


_KINDS = {"ext2": _Ext, "ext3": _Ext, "ext4": _Ext, "xfs": _Xfs, "btrfs": _Btrfs, "ntfs": _Ntfs, "fat": _Fat}


# ---------------------------------------------------------------------------------------------- FileSystem


class FileSystem:
    """One file system, read through ``fh`` (a file object of its own: not shared between threads)."""

    def __init__(self, kind: _Kind, disk: str, volume: str, deadline: float = DEFAULT_DEADLINE, point: str = ""):
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
                entry = self._entry(name, f"{base}/{name}", child)
                count += 1
                if count > max_entries:
                    raise BrowseLimitReached(what="Walking the folders", limit=f"{max_entries} entries", path=shown)
                if count % 1024 == 0:
                    self._tick(shown, "Walking the folders")
                if entry.type == DIR:
                    with self.guarded():
                        key = self._k.key(child)
                    if key in seen:
                        raise DirectoryLoop(path=entry.path)
                    seen.add(key)
                    subdirs.append((entry.path, child, depth + 1))
                yield entry, child
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
    if kind not in _KINDS:
        raise NoFileSystem(volume=volume, disk=disk)
    try:
        k = _KINDS[kind](fh)
    except HavenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile superblock
        reason = (str(exc) or type(exc).__name__).splitlines()[0][:300]
        raise FileSystemCorrupt(fs=kind, volume=volume, disk=disk, reason=reason) from None
    return FileSystem(k, disk, volume, deadline, point)


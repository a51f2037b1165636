"""The volumes of a disk: the whole disk, MBR or GPT partitions, LVM2 logical volumes (in a
partition or on the whole disk) and LUKS volumes (opened with the keys given), each with the file
system it holds.

Volume ids are stable and short: ``disk`` (a file system on the whole disk), ``p1``… (partition
numbers as the table gives them), ``VG/LV`` (a logical volume). An opened LUKS volume keeps the id
of where it lies (its file system, or the logical volumes inside it, are shown ``encrypted``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from haven.engine.reader import DiskFile, DiskImage
from haven.errors import HavenError

from .errors import FileSystemCorrupt, NoFileSystem, VolumeAmbiguous, VolumeLocked, VolumeNotFound
from .filesystems import DEFAULT_DEADLINE, KINDS, FileSystem, detect, open_filesystem
from .luks import Keys, unlock

__all__ = ["Volume", "find_volumes", "pick_volume", "open_volume"]

MAX_VOLUMES = 128
_CONTAINERS = {0x05, 0x0F, 0x85}  # MBR extended partitions: their logical partitions are listed themselves


@dataclass
class Volume:
    id: str
    kind: str  # disk | partition | lvm
    offset: int | None
    size: int
    filesystem: str | None  # ext4, xfs, … ; luks (encrypted), lvm (a physical volume) or None
    label: str | None = None
    encrypted: bool = False
    _open: Callable[[], BinaryIO] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def open(self) -> BinaryIO:
        return self._open()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "offset": self.offset, "size": self.size,
                "filesystem": self.filesystem, "label": self.label,
                "encrypted": self.encrypted}


def _sniff(opener: Callable[[], BinaryIO]) -> str | None:
    try:
        return detect(opener())
    except HavenError:
        raise
    except Exception:  # noqa: BLE001 - a volume too short or unreadable at its start
        return None


def _lvm_volumes(opener: Callable[[], BinaryIO], disk: str, point: str, encrypted: bool = False) -> list[Volume]:
    from dissect.volume.lvm import LVM2

    def logical_volumes(lvm) -> list:
        lvs = lvm.vg.logical_volumes  # a dict by name in dissect.volume 3.x
        return list(lvs.values() if isinstance(lvs, dict) else lvs)

    try:
        lvm = LVM2(opener())
        out = []
        for lv in logical_volumes(lvm)[:MAX_VOLUMES]:
            if not getattr(lv, "is_visible", True):
                continue
            vid = f"{lvm.vg.name}/{lv.name}"

            def open_lv(lv_name=lv.name) -> BinaryIO:
                return next(v for v in logical_volumes(LVM2(opener())) if v.name == lv_name).open()

            size = getattr(open_lv(), "size", 0) or 0
            out.append(Volume(vid, "lvm", None, int(size), _sniff(open_lv), None, encrypted, open_lv))
        return out
    except HavenError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged LVM metadata
        raise FileSystemCorrupt(fs="LVM2", volume="lvm", disk=disk, reason=(str(exc) or type(exc).__name__)[:300]) from None


def _holding(vid: str, kind: str, offset: int | None, size: int, label: str | None, opener: Callable[[], BinaryIO],
             image: DiskImage, keys: Keys | None) -> list[Volume]:
    """The volume(s) one place of the disk holds: a file system, an LVM2 volume group, or (with ``keys``) what a LUKS volume holds."""
    found = _sniff(opener)
    if found == "lvm":
        return _lvm_volumes(opener, image.name, image.point_id)
    candidates = keys() if found == "luks" and keys is not None else []
    if not candidates:
        return [Volume(vid, kind, offset, size, found, label, found == "luks", opener)]
    plain = unlock(opener, candidates, image.name, vid)
    inner = _sniff(plain)
    if inner == "lvm":
        return _lvm_volumes(plain, image.name, image.point_id, encrypted=True)
    return [Volume(vid, kind, offset, int(getattr(plain(), "size", 0) or 0), inner, label, True, plain)]


def find_volumes(image: DiskImage, keys: Keys | None = None) -> list[Volume]:
    """Every volume of the disk, with the kind of file system each holds; LUKS volumes opened with ``keys``
    (without them, or when ``keys()`` answers none, a LUKS volume is shown as ``luks``)."""
    from dissect.volume.disk import Disk

    keys = _once(keys)
    whole = lambda: DiskFile(image)  # noqa: E731
    kind = _sniff(whole)
    if kind in KINDS or kind in ("luks", "lvm"):
        return _holding("disk", "disk", 0, image.size, None, whole, image, keys)
    try:
        table = Disk(DiskFile(image))
        parts = [p for p in table.partitions if p.type not in _CONTAINERS and p.size]
    except HavenError:
        raise
    except Exception:  # noqa: BLE001 - no partition table (or a damaged one): the disk holds no volume we know
        parts = []
    out: list[Volume] = []
    for p in parts[:MAX_VOLUMES]:
        offset, size = int(p.offset), int(p.size)
        if offset < 0 or size <= 0 or offset >= image.size:
            continue
        size = min(size, image.size - offset)
        opener = (lambda o=offset, s=size: DiskFile(image, o, s))
        vid = f"p{p.number}" if getattr(p, "number", None) is not None else f"p{len(out) + 1}"
        label = getattr(p, "name", None)
        out.extend(_holding(vid, "partition", offset, size, label if isinstance(label, str) and label else None, opener, image, keys))
    return out


def _once(keys: Keys | None) -> Keys | None:
    """``keys`` asked at most once per listing (a disk may hold several LUKS volumes)."""
    if keys is None:
        return None
    memo: list[list[bytes]] = []

    def once() -> list[bytes]:
        if not memo:
            memo.append(keys())
        return memo[0]
    return once


def pick_volume(volumes: list[Volume], wanted: str | None, disk: str, point: str) -> Volume:
    readable = [v for v in volumes if v.filesystem in KINDS or v.filesystem == "luks"]
    if wanted:
        for v in volumes:
            if v.id == wanted:
                return v
        raise VolumeNotFound(disk=disk, point=point, volume=wanted, volumes=", ".join(v.id for v in volumes) or "none")
    if len(readable) == 1:
        return readable[0]
    if not readable:
        raise NoFileSystem(volume="any", disk=disk)
    raise VolumeAmbiguous(disk=disk, point=point, volumes=", ".join(f"{v.id} ({v.filesystem})" for v in readable), first=readable[0].id)


def open_volume(image: DiskImage, wanted: str | None = None, deadline: float = DEFAULT_DEADLINE, keys: Keys | None = None) -> FileSystem:
    """The file system of one volume of the disk (the only readable one when ``wanted`` is None)."""
    volume = pick_volume(find_volumes(image, keys), wanted, image.name, image.point_id)
    if volume.filesystem == "luks":
        raise VolumeLocked(volume=volume.id, disk=image.name)
    if volume.filesystem not in KINDS:
        raise NoFileSystem(volume=volume.id, disk=image.name)
    fs = open_filesystem(volume.open(), image.name, volume.id, deadline, image.point_id)
    return fs

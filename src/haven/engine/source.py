"""What the storage engine reads a disk from: the seam between hypervisor adapters and the engine.

A hypervisor adapter (image folder, libvirt, QEMU over QMP) produces one ``DiskSource`` per disk
of a point-in-time view; the engine consumes it without knowing where the bytes come from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Extent", "DiskSource"]


@dataclass(frozen=True, slots=True)
class Extent:
    """A byte range of a disk: ``[offset, offset + length)``."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@runtime_checkable
class DiskSource(Protocol):
    """One disk of a point-in-time view of a VM.

    ``name``       the disk's stable name inside the VM (``vda``, ``sdb``, or a file name).
    ``size``       the virtual size in bytes (what the guest sees), any value >= 0.
    ``format``     the format the disk had at the source (``raw`` or ``qcow2``), for the record.
    """

    name: str
    size: int
    format: str

    def data_extents(self) -> Iterator[Extent]:
        """Ranges that may hold non-zero data, ascending and non-overlapping.

        Everything outside them reads as zeros and must never be read nor stored (holes,
        unallocated clusters, ranges the hypervisor reports as zero).
        """
        ...

    def changed_extents(self) -> Iterator[Extent] | None:
        """Ranges written since the previous point of the same disk, ascending; or ``None``.

        ``None`` means "unknown" (no bitmap, bitmap lost, first backup): the engine then reads
        every data extent and compares chunk by chunk with the previous point. When not ``None``,
        ranges outside it are unchanged since the previous point and need not be read.
        """
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (zeros past ``size`` are never asked for).

        May be called from several threads at once; implementations guard their handles.
        """
        ...

"""Reading a chunk's bytes from a ``DiskSource`` (used by the backup and by the repair of lost writes)."""

from __future__ import annotations

from haven.errors import HavenError

from .errors import SourceReadFailed
from .planning import ChunkPlan
from .source import DiskSource

__all__ = ["read_chunk"]


def read_chunk(src: DiskSource, plan: ChunkPlan) -> bytes | bytearray:
    """The chunk's bytes: the data pieces read from ``src``, zeros elsewhere."""
    length = plan.end - plan.start
    try:
        if len(plan.pieces) == 1 and plan.pieces[0] == (plan.start, length):
            data = src.read(plan.start, length)
        else:
            buf = bytearray(length)
            for off, n in plan.pieces:
                buf[off - plan.start : off - plan.start + n] = src.read(off, n)
            data = buf
    except HavenError:
        raise
    except (OSError, ValueError) as exc:
        raise SourceReadFailed(disk=src.name, offset=plan.start, detail=str(exc)) from exc
    if len(data) != length:
        raise SourceReadFailed(disk=src.name, offset=plan.start, detail=f"short read ({len(data)} of {length} bytes)")
    return data

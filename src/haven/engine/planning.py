"""Cutting a disk into aligned chunks and deciding, per chunk, what must be read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .source import Extent

__all__ = ["ChunkPlan", "plan_chunks", "normalise"]


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Chunk ``index`` covers ``[start, end)``; ``pieces`` are the (offset, length) ranges that
    may hold data (empty: the chunk is all zeros); ``unchanged`` is True when a changed-block map
    was given and no changed range touches the chunk."""

    index: int
    start: int
    end: int
    pieces: tuple[tuple[int, int], ...]
    unchanged: bool


def normalise(extents: Iterable[Extent], size: int) -> list[tuple[int, int]]:
    """Extents clipped to ``[0, size)``, sorted, merged, as (start, end) pairs."""
    spans = sorted((max(0, e.offset), min(size, e.offset + e.length)) for e in extents)
    out: list[list[int]] = []
    for s, e in spans:
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


class _Cursor:
    """Walks sorted spans alongside ascending chunk ranges."""

    def __init__(self, spans: list[tuple[int, int]]):
        self.spans, self.j = spans, 0

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        spans, j = self.spans, self.j
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        self.j = j
        out = []
        while j < len(spans) and spans[j][0] < end:
            out.append((max(start, spans[j][0]), min(end, spans[j][1])))
            j += 1
        return out


def plan_chunks(size: int, chunk_size: int, data: Iterable[Extent], changed: Iterable[Extent] | None) -> Iterator[ChunkPlan]:
    """One ``ChunkPlan`` per chunk of a disk of ``size`` bytes, in order."""
    data_cur = _Cursor(normalise(data, size))
    changed_cur = _Cursor(normalise(changed, size)) if changed is not None else None
    for index, start in enumerate(range(0, size, chunk_size)):
        end = min(size, start + chunk_size)
        pieces = tuple((s, e - s) for s, e in data_cur.overlapping(start, end))
        unchanged = changed_cur is not None and not changed_cur.overlapping(start, end)
        yield ChunkPlan(index, start, end, pieces, unchanged)

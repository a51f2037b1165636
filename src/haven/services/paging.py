"""Keyset pagination shared by every list: a page is ``limit`` rows after a cursor, ordered by a unique key.

A cursor names the list that made it and the key of the last row shown; the next page is the rows whose
key comes after it. A page costs the same however deep it is, and rows added or removed meanwhile never
shift a page (no row is shown twice or skipped because another came in). Lists of small collections
(vaults, policies, hosts, VMs) page their built views in memory with :func:`page_views`, with the same
cursor and the same guarantees; large ones (items, points, jobs, alerts, downloads) page in SQL with
:class:`Keyset`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from sqlalchemy import and_, or_

from haven.errors import UserError

__all__ = ["CursorInvalid", "Keyset", "MAX_LIMIT", "page_views", "encode_cursor", "decode_cursor"]

#: no page holds more rows than this
MAX_LIMIT = 1000


class CursorInvalid(UserError):
    code = "UserErrorCursorInvalid"
    message = "The cursor {cursor!r} was not made by this list."
    recommendation = "Start again without a cursor, then pass the cursor each page's X-Next-Cursor header gives."


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if value is None or isinstance(value, (str, int)):
        return value
    raise TypeError(f"a cursor cannot hold {type(value).__name__}")


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        when = datetime.fromisoformat(value["t"])
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when
    if isinstance(value, str) and "\x00" not in value or isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("not a key value")


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    text = json.dumps([kind, [_plain(v) for v in key]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, width: int | None) -> tuple:
    """The key a cursor of list ``kind`` holds; CursorInvalid for anything else (another list's cursor too)."""
    try:
        made_by, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        values = tuple(_typed(v) for v in key)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise CursorInvalid(cursor=cursor[:80]) from None
    if made_by != kind or (width is not None and len(values) != width):
        raise CursorInvalid(cursor=cursor[:80])
    return values


def _python_type(column) -> type:
    kind = column.type
    return getattr(kind, "impl_instance", kind).python_type  # a TypeDecorator (UTCDateTime): its impl's


def clamp(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


@dataclass(frozen=True)
class Keyset:
    """Order of a list in SQL: ``columns`` (each ``(column, descending)``), the last one unique (an id)."""

    kind: str
    columns: tuple[tuple[Any, bool], ...]

    def page(self, s, query, limit: int, cursor: str | None, key: Callable[[Any], tuple]) -> tuple[list, str | None]:
        """The rows of ``query`` after ``cursor``, at most ``limit``, and the cursor of the next page (None at the end).
        ``key`` gives a row's values of ``columns``."""
        limit = clamp(limit)
        if cursor:
            after = decode_cursor(self.kind, cursor, len(self.columns))
            if not all(isinstance(v, _python_type(c)) for (c, _), v in zip(self.columns, after)):
                raise CursorInvalid(cursor=cursor[:80])  # a key of other types than this list's
            query = query.where(self._after(after))
        order = [c.desc() if desc else c.asc() for c, desc in self.columns]
        rows = list(s.execute(query.order_by(*order).limit(limit + 1)).all())
        rows = [r[0] if len(r) == 1 else r for r in rows]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_cursor(self.kind, key(rows[-1])) if more else None)

    def _after(self, values: tuple):
        clauses = []
        for i, (column, desc) in enumerate(self.columns):
            same = [c == v for (c, _), v in zip(self.columns[:i], values[:i])]
            beyond = column < values[i] if desc else column > values[i]
            clauses.append(and_(*same, beyond))
        return or_(*clauses)


def page_views(kind: str, views: Sequence[dict], key: Callable[[dict], tuple], limit: int,
               cursor: str | None) -> tuple[list[dict], str | None]:
    """Keyset paging of a list built in memory, in ascending ``key`` (a tuple of str / int / time, unique per view)."""
    limit = clamp(limit)
    ordered = sorted(views, key=key)
    if cursor:
        after = decode_cursor(kind, cursor, len(key(ordered[0])) if ordered else None)
        try:
            ordered = [v for v in ordered if key(v) > after]
        except TypeError:  # a key of other types than this list's
            raise CursorInvalid(cursor=cursor[:80]) from None
    page = ordered[:limit]
    return page, (encode_cursor(kind, key(page[-1])) if len(ordered) > limit else None)

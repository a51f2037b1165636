"""Reads the access tables of ``docs/security.md``: the specification the authorization tests check.

Each surface has a section whose heading names it (for example ``### /api/v1``) with one table:
``| method | route | <principal> | … |`` and a cell per principal, ``✓`` (allowed) or ``·`` (denied).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["read_table", "SECURITY_DOC"]

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_CELLS = {"✓": True, "·": False}


def read_table(surface: str, principals: list[str]) -> dict[tuple[str, str], dict[str, bool]]:
    """``(method, surface + route) -> {principal: allowed}`` from the first table under the heading ``### <surface>``."""
    lines = SECURITY_DOC.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.fullmatch(rf"###\s+`?{re.escape(surface)}`?.*", line.strip()))
    except StopIteration:
        raise AssertionError(f"docs/security.md has no section '### {surface}'") from None
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header = rows[0]
    assert header[:2] == ["method", "route"] and header[2:] == principals, f"columns of {surface}: {header}"
    table: dict[tuple[str, str], dict[str, bool]] = {}
    for cells in rows[2:]:
        method, full = cells[0], surface + cells[1].strip("`")
        assert (method, full) not in table, f"{method} {full} twice in docs/security.md"
        table[(method, full)] = {p: _CELLS[c] for p, c in zip(principals, cells[2:], strict=True)}
    return table

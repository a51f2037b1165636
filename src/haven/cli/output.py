"""Printing results: ``--output table`` (Rich) or ``--output json``; errors with their fix."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from haven.errors import HavenError

__all__ = ["emit", "emit_error", "console", "err_console"]

console = Console()
err_console = Console(stderr=True)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, str) and len(value) > 19 and value[4:5] == "-" and "T" in value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    return str(value)


def emit(data: Any, output: str, columns: list[str] | None = None) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
        return
    if data is None:
        return
    rows = data if isinstance(data, list) else [data]
    if not rows:
        console.print("(none)")
        return
    if not isinstance(data, list):  # one object: a two-column key/value table
        table = Table(show_header=False, box=None)
        for key, value in data.items():
            if columns is None or key in columns:
                table.add_row(f"[bold]{key}[/]", _cell(value))
        console.print(table)
        return
    cols = columns or list(rows[0].keys())
    table = Table()
    for c in cols:  # ids are what users copy into the next command: never cut them
        table.add_column(c, no_wrap=c == "id", min_width=32 if c == "id" else None)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    console.print(table)


def emit_error(err: HavenError) -> None:
    err_console.print(f"[bold red]{escape(err.code)}[/]: {escape(err.text)}", soft_wrap=True, highlight=False)
    if err.fix:
        err_console.print(f"[yellow]Fix[/]: {escape(err.fix)}", soft_wrap=True, highlight=False)

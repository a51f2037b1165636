"""What every command shares: the API client, the output format, and error handling."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer

from haven.transport.client import ApiClient
from haven.cli.output import emit, emit_error
from haven.errors import HavenError

__all__ = ["State", "handled", "SubOpt", "VaultOpt", "VmOpt", "OutputOpt", "LimitOpt", "CursorOpt", "state"]


@dataclass
class State:
    server: str | None = None
    token: str | None = None
    output: str = "table"
    _client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.server, self.token)
        return self._client

    def show(self, data: Any, columns: list[str] | None = None) -> None:
        emit(data, self.output, columns)

    def show_list(self, path: str, columns: list[str] | None, limit: int | None, cursor: str | None, **params) -> None:
        """A list endpoint: every page (the cursor followed), or with --limit / --cursor the one page asked for,
        the next page's cursor on stderr."""
        if limit is None and cursor is None:
            self.show(self.client.get_all(path, **params), columns)
            return
        rows, following = self.client.page(path, **params, limit=limit, cursor=cursor)
        self.show(rows, columns)
        if following:
            typer.echo(f"More: pass --cursor {following}", err=True)


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def handled(fn: Callable) -> Callable:
    """Print a HavenError with its fix and exit with the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HavenError as e:
            emit_error(e)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def _default_subscription() -> str | None:
    return os.environ.get("HAVEN_SUBSCRIPTION")


SubOpt = Annotated[str, typer.Option("--subscription", "-s", envvar="HAVEN_SUBSCRIPTION", help="Subscription name or id.")]
VaultOpt = Annotated[str, typer.Option("--vault", "--vault-name", "-v", help="Vault name.")]
VmOpt = Annotated[str, typer.Option("--vm", "--item-name", help="The VM (protected item) name.")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table or json")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, max=1000, help="Show one page of at most this many (default: every page).")]
CursorOpt = Annotated[Optional[str], typer.Option("--cursor", help="Start after this page (the cursor a --limit page printed).")]

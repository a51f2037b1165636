"""The ``haven`` command: groups shaped like ``az backup``, talking to the API over HTTP."""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from haven import __version__
from haven.cli.state import State
from haven.cli.textparams import plain_text_options

__all__ = ["app", "hoist_output"]

# Each command's module is imported when that command runs (or its help is shown): a call that only talks
# HTTP loads neither the engine nor the server. name -> (module, attribute, modules that add commands to it).
_LAZY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "subscription": ("account", "subscription", ()),
    "token": ("account", "token", ()),
    "vm": ("account", "vm", ()),
    "region": ("account", "region", ()),
    "vault": ("vaults", "vault", ("restore",)),  # vault import
    "policy": ("vaults", "policy", ()),
    "protection": ("protection", "protection", ()),
    "item": ("protection", "item", ()),
    "job": ("protection", "job", ()),
    "recoverypoint": ("protection", "recoverypoint", ()),
    "restore": ("protection", "restore", ("restore", "files", "instant")),  # restore-vm …, restore files …, restore instant …
    "prepare": ("prepare", "app", ()),
    "keyvault": ("keyvault", "app", ()),
    "host": ("agent", "host", ()),
    "resource-guard": ("guard", "resource_guard", ()),
    "serve": ("server", "serve", ()),
    "agent": ("agent", "agent", ()),
    "demo": ("server", "demo", ()),
}
_LOADED: dict[str, object] = {}


def _load(name: str):
    """The click command of ``name``, built from its module on first use."""
    if name not in _LOADED:
        module, attr, extra = _LAZY[name]
        obj = getattr(import_module(f"haven.cli.commands.{module}"), attr)
        for other in extra:
            import_module(f"haven.cli.commands.{other}")
        holder = typer.Typer()
        if isinstance(obj, typer.Typer):
            holder.add_typer(obj, name=name)
        else:  # a single command (serve, agent, demo)
            holder.command(name)(obj)
        _LOADED[name] = typer.main.get_group(holder).commands[name]
        plain_text_options(_LOADED[name])
    return _LOADED[name]


def hoist_output(args: list[str]) -> list[str]:
    """``-o/--output VALUE`` may stand anywhere (``haven vault list -s S -o json``): it moves in front of the
    subcommand, where the global option is parsed. Nothing after ``--`` is touched."""
    rest, found = [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in ("-o", "--output") and i + 1 < len(args):
            found, i = args[i + 1], i + 2
            continue
        if arg.startswith("--output="):
            found = arg.split("=", 1)[1]
        elif arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            found = arg[2:]
        else:
            rest.append(arg)
        i += 1
    return rest if found is None else ["--output", found, *rest]


class _OutputAnywhere(TyperGroup):
    def parse_args(self, ctx, args):
        plain_text_options(self)
        return super().parse_args(ctx, hoist_output(list(args)))

    def list_commands(self, ctx):
        return [*super().list_commands(ctx), *_LAZY]

    def get_command(self, ctx, cmd_name):
        if cmd_name in _LAZY:
            return _load(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(name="haven", help="Haven: self-hosted backup for virtual machines.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_OutputAnywhere)


@app.callback()
def main(
    ctx: typer.Context,
    server_url: Annotated[Optional[str], typer.Option("--server", envvar="HAVEN_SERVER", help="Server URL (default: from ~/.haven/credentials.json).")] = None,
    token: Annotated[Optional[str], typer.Option("--token", envvar="HAVEN_TOKEN", help="Bearer token (default: the local Owner token).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
):
    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    ctx.obj = State(server=server_url, token=token, output=output)


@app.command("version")
def version() -> None:
    """Print Haven's version."""
    print(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()

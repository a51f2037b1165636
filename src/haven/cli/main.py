"""The ``haven`` command: groups shaped like ``az backup``, talking to the API over HTTP."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from haven import __version__
from haven.cli.commands import account, agent, guard, keyvault, prepare, protection, server, vaults
from haven.cli.commands import restore as _restore_commands  # noqa: F401  (adds commands to existing groups)
from haven.cli.commands import files as _file_commands  # noqa: F401  (ls/get/find straight from the vault join `restore files`)
from haven.cli.commands import instant as _instant_commands  # noqa: F401  (`restore instant`, commit, discard)
from haven.cli.state import State

__all__ = ["app", "hoist_output"]



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
        return super().parse_args(ctx, hoist_output(list(args)))


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


app.add_typer(account.subscription, name="subscription")
app.add_typer(account.token, name="token")
app.add_typer(account.vm, name="vm")
app.add_typer(account.region, name="region")
app.add_typer(vaults.vault, name="vault")
app.add_typer(vaults.policy, name="policy")
app.add_typer(protection.protection, name="protection")
app.add_typer(protection.item, name="item")
app.add_typer(protection.job, name="job")
app.add_typer(protection.recoverypoint, name="recoverypoint")
app.add_typer(protection.restore, name="restore")
app.add_typer(prepare.app, name="prepare")
app.add_typer(keyvault.app, name="keyvault")
app.add_typer(agent.host, name="host")
app.add_typer(guard.resource_guard, name="resource-guard")
app.command("serve")(server.serve)
app.command("agent")(agent.agent)
app.command("demo")(server.demo)

if __name__ == "__main__":  # pragma: no cover
    app()

"""haven keyvault …"""

import typer

app = typer.Typer(help="keyvault", no_args_is_help=True)

"""`haven restore instant …`: a new VM running in seconds from a recovery point, then `commit` (local
disks, while it runs) or `discard` (gone, with every file). Added to the ``restore`` group."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from haven.cli.commands.protection import restore
from haven.cli.commands.restore import WaitOpt, _finish, _point
from haven.cli.state import SubOpt, handled, state
from haven.errors import UserError

instant = typer.Typer(help="Instant restore: start a new VM at once on overlays over a recovery point served from the vault; "
                           "then 'commit' it to local disks while it runs, or 'discard' it.",
                      invoke_without_command=True)
restore.add_typer(instant, name="instant")

NameOpt = Annotated[str, typer.Option("--target-vm-name", help="The instant-restored VM's name.")]


@instant.callback()
@handled
def instant_restore(ctx: typer.Context,
                    subscription: Annotated[Optional[str], typer.Option("--subscription", "-s", envvar="HAVEN_SUBSCRIPTION",
                                                                        help="Subscription name or id.")] = None,
                    vault_name: Annotated[Optional[str], typer.Option("--vault", "--vault-name", "-v", help="Vault name.")] = None,
                    vm: Annotated[Optional[str], typer.Option("--vm", "--item-name", help="The VM (protected item) name.")] = None,
                    rp_name: Annotated[Optional[str], typer.Option("--rp-name", "-r", help="Recovery point id.")] = None,
                    target_vm_name: Annotated[Optional[str], typer.Option("--target-vm-name", help="Name of the new VM; must not exist on the host.")] = None,
                    host: Annotated[Optional[str], typer.Option("--host", help="Host to start the VM on (default: the original's).")] = None,
                    target: Annotated[Optional[str], typer.Option("--target-folder", help="Absolute folder in which the VM's own folder of overlays is made (default: /var/lib/libvirt/images/haven-instant).")] = None,
                    wait: WaitOpt = False):
    """Start a new VM from a recovery point in seconds, whatever its disks' size (libvirt, on the server's host)."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [flag for flag, value in (("-s", subscription), ("-v", vault_name), ("--vm", vm), ("--rp-name", rp_name),
                                        ("--target-vm-name", target_vm_name)) if not value]
    if missing:
        raise UserError(f"haven restore instant needs {', '.join(missing)}.",
                        "haven restore instant -s SUBSCRIPTION -v VAULT --vm VM --rp-name POINT --target-vm-name NEW_NAME --wait")
    st = state(ctx)
    body = {"target_vm_name": target_vm_name, **({"host": host} if host else {}), **({"target": target} if target else {})}
    _finish(st, subscription, st.client.post(_point(subscription, vault_name, vm, rp_name) + "/instant-restore", body), wait)


@instant.command("commit")
@handled
def instant_commit(ctx: typer.Context, subscription: SubOpt, target_vm_name: NameOpt, wait: WaitOpt = False):
    """Move the instant-restored VM to local disks while it runs; after it, nothing depends on the vault."""
    st = state(ctx)
    _finish(st, subscription, st.client.post(f"/subscriptions/{subscription}/instant-restores/{target_vm_name}/commit", {}), wait)


@instant.command("discard")
@handled
def instant_discard(ctx: typer.Context, subscription: SubOpt, target_vm_name: NameOpt, wait: WaitOpt = False):
    """Stop and remove the instant-restored VM, its NBD server and every file."""
    st = state(ctx)
    _finish(st, subscription, st.client.post(f"/subscriptions/{subscription}/instant-restores/{target_vm_name}/discard", {}), wait)

"""More `haven restore …` commands (restore-vm, files mount-rp/unmount-rp …) and `haven vault import`.

Commands are added to the existing Typer groups: ``restore`` from ``commands.protection`` and ``vault``
from ``commands.vaults``; ``main.py`` imports this module so they register.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Optional

import typer

from haven.cli.commands.protection import _items, _wait, restore
from haven.cli.commands.vaults import vault
from haven.cli.output import err_console
from haven.cli.state import SubOpt, VaultOpt, VmOpt, handled, state
from haven.errors import UserError

files = typer.Typer(help="File recovery: browse, find and download files straight from the vault (ls, get, find), "
                         "or serve a recovery point's disks read-only over NBD (mount-rp).", no_args_is_help=True)
restore.add_typer(files, name="files")

RpOpt = Annotated[str, typer.Option("--rp-name", "-r", help="Recovery point id.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job to finish.")]


def _point(subscription: str, vault_name: str, vm: str, rp: str) -> str:
    return f"{_items(subscription, vault_name)}/{vm}/recovery-points/{rp}"


def _finish(st, subscription: str, started: dict, wait: bool) -> dict:
    if wait:
        started = _wait(st, subscription, started["id"], 24 * 3600)
    st.show(started)
    for w in started.get("warnings") or []:
        err_console.print(f"[yellow]note:[/yellow] {w.get('message') if isinstance(w, dict) else w}")
    if wait and started["status"] in ("Failed", "Cancelled"):
        raise typer.Exit(1)
    return started


@restore.command("restore-vm")
@handled
def restore_vm(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt,
               target_vm_name: Annotated[str, typer.Option("--target-vm-name", help="Name of the new VM; must not exist on the host.")],
               host: Annotated[Optional[str], typer.Option("--host", help="Host of the region to create the VM on.")] = None,
               target: Annotated[Optional[str], typer.Option("--target-folder", help="Absolute folder for the restored disks.")] = None,
               fmt: Annotated[str, typer.Option("--format")] = "raw",
               use_secondary_region: Annotated[bool, typer.Option("--use-secondary-region", help="Restore from the GRS copy in the paired region.")] = False,
               wait: WaitOpt = False):
    """Create a new VM from a recovery point. An existing VM is never replaced: delete it first or use a new name."""
    st = state(ctx)
    body = {"target_vm_name": target_vm_name, "format": fmt, "use_secondary_region": use_secondary_region,
            **({"host": host} if host else {}), **({"target": target} if target else {})}
    _finish(st, subscription, st.client.post(_point(subscription, vault_name, vm, rp_name) + "/restore-vm", body), wait)


@restore.command("replace-disks")
@handled
def replace_disks(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt,
                  disks: Annotated[Optional[list[str]], typer.Option("--disk", help="Only these disks (default: all of the point's).")] = None,
                  yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
                  wait: WaitOpt = False):
    """Overwrite the (stopped) original VM's disks with the recovery point's. The current disks are backed up first."""
    st = state(ctx)
    if not yes:
        typer.confirm(f"Replace the disks of VM {vm!r} with recovery point {rp_name}? (its current disks are kept as a new recovery point)",
                      abort=True)
    body = {"disks": disks} if disks else {}
    _finish(st, subscription, st.client.post(_point(subscription, vault_name, vm, rp_name) + "/replace-disks", body), wait)


@restore.command("cross-region-restore-disks")
@handled
def cross_region_restore_disks(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt,
                               target: Annotated[str, typer.Option("--target-folder", help="Absolute folder for the restored disks.")],
                               disks: Annotated[Optional[list[str]], typer.Option("--disk")] = None,
                               fmt: Annotated[str, typer.Option("--format")] = "raw",
                               wait: WaitOpt = False):
    """restore-disks --use-secondary-region: read the disks from the GRS vault's copy in the paired region."""
    st = state(ctx)
    body = {"target": target, "format": fmt, **({"disks": disks} if disks else {})}
    _finish(st, subscription, st.client.post(_point(subscription, vault_name, vm, rp_name) + "/cross-region-restore-disks", body), wait)


@restore.command("list-secondary-points")
@handled
def list_secondary_points(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt):
    """Recovery points of a GRS vault's item as the secondary region holds them."""
    st = state(ctx)
    st.show(st.client.get(f"{_items(subscription, vault_name)}/{vm}/secondary-recovery-points"), ["id", "time", "region"])


@files.command("mount-rp")
@handled
def mount_rp(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt,
             disks: Annotated[Optional[list[str]], typer.Option("--disk")] = None,
             hours: Annotated[float, typer.Option("--hours", help="Close the exports after this many hours.")] = 12.0,
             use_secondary_region: Annotated[bool, typer.Option("--use-secondary-region")] = False,
             wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait and print how to attach and mount.")] = True):
    """Serve a recovery point's disks read-only over NBD and print how to attach and mount them."""
    st = state(ctx)
    body = {"hours": hours, "use_secondary_region": use_secondary_region, **({"disks": disks} if disks else {})}
    job = st.client.post(_point(subscription, vault_name, vm, rp_name) + "/mount", body)
    if not wait:
        st.show(job)
        return
    job = _wait(st, subscription, job["id"], 24 * 3600)
    if st.output == "json" or job["status"] not in ("Completed", "CompletedWithWarnings"):
        st.show(job)
        if job["status"] in ("Failed", "Cancelled"):
            raise typer.Exit(1)
        return
    result = job.get("result") or {}
    typer.echo(f"Recovery point {rp_name} of {vm} is mounted until {result.get('expires_at')} (session {result.get('session_id')}).")
    for e in result.get("exports", []):
        typer.echo(f"  {e['disk']}: {e['uri']}  ({e['size']} bytes)")
    for line in result.get("instructions", []):
        typer.echo(line)


@files.command("unmount-rp")
@handled
def unmount_rp(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt):
    """Close a recovery point's file-recovery exports now."""
    st = state(ctx)
    st.show(st.client.post(_point(subscription, vault_name, vm, rp_name) + "/unmount", {}))


@files.command("list")
@handled
def list_mounts(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt):
    """Open file-recovery exports of the VM's recovery points."""
    st = state(ctx)
    st.show(st.client.get(f"{_items(subscription, vault_name)}/{vm}/mounts"), ["session_id", "point_id", "expires_at"])


@vault.command("import")
@handled
def import_vault(ctx: typer.Context, subscription: SubOpt,
                 storage_url: Annotated[str, typer.Option("--storage-url", help="The vault's storage (file:///…/<vault id>, s3://…, az://…).")],
                 master_key_file: Annotated[Optional[Path], typer.Option("--master-key-file", help="The old server's master.key.")] = None,
                 name: Annotated[Optional[str], typer.Option("--name", help="Vault name here (default: its old name).")] = None,
                 region: Annotated[Optional[str], typer.Option("--region")] = None):
    """Rebuild a vault, its items and recovery points on this server from its storage alone."""
    st = state(ctx)
    body: dict = {"storage_url": storage_url}
    if master_key_file is not None:
        try:
            body["master_key"] = base64.b64encode(master_key_file.read_bytes()).decode()
        except OSError as exc:
            raise UserError(f"Cannot read the master key file {master_key_file}: {exc.strerror or exc}.",
                            "Give the path of the old server's master.key file.") from None
    if name:
        body["name"] = name
    if region:
        body["region"] = region
    st.show(st.client.post(f"/subscriptions/{subscription}/vaults/import", body))

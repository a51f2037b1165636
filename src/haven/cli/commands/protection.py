"""haven protection … / item … / job … / recoverypoint … / restore …"""

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from haven.cli.commands.guard import ApprovalOpt
from haven.cli.output import err_console
from haven.cli.state import CursorOpt, LimitOpt, SubOpt, VaultOpt, VmOpt, handled, state
from haven.errors import UserError

protection = typer.Typer(help="Enable, run and stop protection of VMs.", no_args_is_help=True)
item = typer.Typer(help="Protected items.", no_args_is_help=True)
job = typer.Typer(help="Jobs: list, show, wait, stop.", no_args_is_help=True)
recoverypoint = typer.Typer(help="Recovery points.", no_args_is_help=True)
restore = typer.Typer(help="Restore disks and VMs.", no_args_is_help=True)

ITEM_COLUMNS = ["vm", "host", "policy", "protection_state", "last_backup_status", "last_backup_time", "latest_consistency"]
JOB_COLUMNS = ["id", "operation", "status", "vm", "created_at", "duration_seconds"]
POINT_COLUMNS = ["id", "time", "state", "consistency", "size_bytes", "stored_bytes", "expires_at"]
FINISHED = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


def _items(sub: str, vault: str) -> str:
    return f"/subscriptions/{sub}/vaults/{vault}/items"


def _parse_when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{value!r} is not a date or date-time.", "Use ISO 8601, e.g. 2027-01-31 or 2027-01-31T12:00:00+01:00.") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@protection.command("enable-for-vm")
@handled
def enable_for_vm(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt,
                  vms: Annotated[list[str], typer.Option("--vm", "--item-name",
                                                         help="The VM to protect; repeat --vm to protect several in one call.")],
                  policy_name: Annotated[Optional[str], typer.Option("--policy-name", "-p")] = None,
                  host: Annotated[Optional[str], typer.Option("--host")] = None,
                  include_disks: Annotated[Optional[list[str]], typer.Option("--include-disks")] = None,
                  exclude_disks: Annotated[Optional[list[str]], typer.Option("--exclude-disks")] = None,
                  approval: ApprovalOpt = None):
    """Protect one VM, or several (--vm a --vm b): each is protected or reports its own error."""
    st = state(ctx)
    body = {"policy": policy_name, "host": host, "include_disks": include_disks, "exclude_disks": exclude_disks,
            "approval_id": approval}
    body = {k: v for k, v in body.items() if v}
    if len(vms) == 1:
        st.show(st.client.post(_items(subscription, vault_name), {"vm": vms[0]} | body), None)
        return
    answer = st.client.post(_items(subscription, vault_name), {"vms": vms} | body)
    if st.output == "json":
        st.show(answer)
    else:
        st.show([{"vm": r["vm"], "status": r["status"], "error": (r["error"] or {}).get("code", ""),
                  "recommendation": (r["error"] or {}).get("recommendation", "")} for r in answer["results"]],
                ["vm", "status", "error", "recommendation"])
    if answer["failed"]:
        err_console.print(f"{answer['failed']} of {len(vms)} VM(s) were not protected; {answer['protected']} were.")
        raise typer.Exit(1)


@protection.command("disable")
@handled
def disable(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
            delete_backup_data: Annotated[bool, typer.Option("--delete-backup-data")] = False,
            yes: Annotated[bool, typer.Option("--yes", "-y")] = False, approval: ApprovalOpt = None):
    if delete_backup_data and not yes:
        typer.confirm(f"Stop protection of {vm!r} and delete its backup data (soft delete)?", abort=True)
    st = state(ctx)
    body = {"delete_backup_data": delete_backup_data} | ({"approval_id": approval} if approval else {})
    st.show(st.client.post(f"{_items(subscription, vault_name)}/{vm}/disable", body))


@protection.command("undelete")
@handled
def undelete(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt):
    st = state(ctx)
    st.show(st.client.post(f"{_items(subscription, vault_name)}/{vm}/undelete"))


@protection.command("backup-now")
@handled
def backup_now(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
               retain_until: Annotated[Optional[str], typer.Option("--retain-until", help="Expiry of this point (ISO date); default: 30 days from now, as in Azure Backup.")] = None,
               wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and show its progress.")] = False):
    st = state(ctx)
    body = {"retain_until": _parse_when(retain_until).isoformat()} if retain_until else {}
    started = st.client.post(f"{_items(subscription, vault_name)}/{vm}/backup", body)
    if wait:
        started = _wait(st, subscription, started["id"], 24 * 3600)
    st.show(started, None)
    if wait and started["status"] in ("Failed", "Cancelled"):
        raise typer.Exit(1)


@protection.command("check-vm")
@handled
def check_vm(ctx: typer.Context, subscription: SubOpt, vm: VmOpt, host: Annotated[Optional[str], typer.Option("--host")] = None):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/protection/check-vm", vm=vm, host=host))


@item.command("list")
@handled
def item_list(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list(_items(subscription, vault_name), ITEM_COLUMNS, limit, cursor)


@item.command("show")
@handled
def item_show(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt):
    st = state(ctx)
    st.show(st.client.get(f"{_items(subscription, vault_name)}/{vm}"))


@item.command("set-policy")
@handled
def item_set_policy(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
                    policy_name: Annotated[str, typer.Option("--policy-name", "-p")], approval: ApprovalOpt = None):
    st = state(ctx)
    body = {"policy": policy_name} | ({"approval_id": approval} if approval else {})
    st.show(st.client.put(f"{_items(subscription, vault_name)}/{vm}/policy", body))


@job.command("list")
@handled
def job_list(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt,
             status: Annotated[Optional[str], typer.Option("--status")] = None,
             operation: Annotated[Optional[str], typer.Option("--operation", "--type")] = None,
             vm: Annotated[Optional[str], typer.Option("--vm")] = None,
             start: Annotated[Optional[str], typer.Option("--start-date")] = None,
             end: Annotated[Optional[str], typer.Option("--end-date")] = None, limit: LimitOpt = None, cursor: CursorOpt = None):
    st = state(ctx)
    params = {"status": status, "type": operation, "vm": vm,
              "start": _parse_when(start).isoformat() if start else None, "end": _parse_when(end).isoformat() if end else None}
    st.show_list(f"/subscriptions/{subscription}/vaults/{vault_name}/jobs", JOB_COLUMNS, limit, cursor, **params)


@job.command("show")
@handled
def job_show(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n", help="Job id.")]):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/jobs/{name}"))


@job.command("stop")
@handled
def job_stop(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n", help="Job id.")]):
    st = state(ctx)
    st.show(st.client.post(f"/subscriptions/{subscription}/jobs/{name}/stop"))


@job.command("wait")
@handled
def job_wait(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n", help="Job id.")],
             timeout: Annotated[float, typer.Option("--timeout")] = 3600.0):
    st = state(ctx)
    final = _wait(st, subscription, name, timeout)
    st.show(final)
    if final["status"] not in FINISHED:
        raise UserError(f"Job {name} is still {final['status']} after {timeout:.0f}s.", "Wait longer with --timeout, or stop it with 'haven job stop'.")
    if final["status"] in ("Failed", "Cancelled"):
        raise typer.Exit(1)


def _wait(st, subscription: str, job_id: str, timeout: float) -> dict:
    """Wait for the job (long polls: its end is seen at once), showing a progress bar on a terminal (and
    nothing when --output json)."""
    show = st.output != "json" and err_console.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=err_console, disable=not show, transient=True) as bar:
        task = bar.add_task(job_id[:8], total=100)

        def seen(current: dict) -> None:
            subtasks = current.get("subtasks") or []
            if subtasks:
                pct = sum(t.get("percent", 0) or 0 for t in subtasks) / max(1, len(subtasks))
                active = next((t["name"] for t in subtasks if t.get("status") == "InProgress"), subtasks[-1]["name"])
                bar.update(task, completed=pct, description=active)

        # a bar is redrawn every second; without one, each request waits up to 10 s for the status to change
        return st.client.wait_job(subscription, job_id, timeout, hold=1.0 if show else 10.0, seen=seen)


@recoverypoint.command("list")
@handled
def rp_list(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list(f"{_items(subscription, vault_name)}/{vm}/recovery-points", POINT_COLUMNS, limit, cursor)


@recoverypoint.command("show")
@handled
def rp_show(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
            name: Annotated[str, typer.Option("--name", "-n", help="Recovery point id.")]):
    st = state(ctx)
    st.show(st.client.get(f"{_items(subscription, vault_name)}/{vm}/recovery-points/{name}"))


@restore.command("restore-disks")
@handled
def restore_disks(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
                  rp_name: Annotated[str, typer.Option("--rp-name", "-r", help="Recovery point id.")],
                  target: Annotated[str, typer.Option("--target-folder", help="Absolute folder on the host for the restored disks.")],
                  disks: Annotated[Optional[list[str]], typer.Option("--disk")] = None,
                  fmt: Annotated[str, typer.Option("--format")] = "raw",
                  secondary: Annotated[bool, typer.Option("--use-secondary-region", help="Read from the paired region's copy (GRS vaults).")] = False,
                  host: Annotated[Optional[str], typer.Option("--host", help="Host whose agent writes the disks (default: the server).")] = None,
                  wait: Annotated[bool, typer.Option("--wait")] = False):
    st = state(ctx)
    body = {"target": target, "format": fmt, **({"disks": disks} if disks else {}), **({"host": host} if host else {})}
    operation = "cross-region-restore-disks" if secondary else "restore-disks"
    started = st.client.post(f"{_items(subscription, vault_name)}/{vm}/recovery-points/{rp_name}/{operation}", body)
    if wait:
        started = _wait(st, subscription, started["id"], 24 * 3600)
    st.show(started)
    if wait and started["status"] in ("Failed", "Cancelled"):
        raise typer.Exit(1)

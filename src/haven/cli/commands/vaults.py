"""haven vault … and haven policy …"""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from haven.cli.commands.guard import ApprovalOpt, vault_guard
from haven.cli.state import CursorOpt, LimitOpt, SubOpt, VaultOpt, handled, state
from haven.errors import UserError

vault = typer.Typer(help="Backup vaults.", no_args_is_help=True)
backup_properties = typer.Typer(help="Storage redundancy of a vault.", no_args_is_help=True)
vault.add_typer(backup_properties, name="backup-properties")
vault.add_typer(vault_guard, name="resource-guard")
policy = typer.Typer(help="Backup policies: schedule and retention.", no_args_is_help=True)

VAULT_COLUMNS = ["name", "region", "state", "storage_redundancy", "protected_items", "recovery_points", "stored_bytes"]
POLICY_COLUMNS = ["name", "schedule", "retention", "next_run", "protected_items"]


@vault.command("create")
@handled
def vault_create(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                 region: Annotated[str, typer.Option("--region", "--location", "-l")],
                 redundancy: Annotated[Optional[str], typer.Option("--backup-storage-redundancy")] = None):
    st = state(ctx)
    body = {"name": name, "region": region}
    if redundancy:
        body["storage_redundancy"] = redundancy
    st.show(st.client.post(f"/subscriptions/{subscription}/vaults", body))


@vault.command("list")
@handled
def vault_list(ctx: typer.Context, subscription: SubOpt, limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list(f"/subscriptions/{subscription}/vaults", VAULT_COLUMNS, limit, cursor)


@vault.command("show")
@handled
def vault_show(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/vaults/{name}"))


@vault.command("delete")
@handled
def vault_delete(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                 yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False):
    if not yes:
        typer.confirm(f"Delete vault {name!r}?", abort=True)
    state(ctx).client.delete(f"/subscriptions/{subscription}/vaults/{name}")


@backup_properties.command("set")
@handled
def backup_properties_set(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                          redundancy: Annotated[Optional[str], typer.Option("--backup-storage-redundancy", help="LRS or GRS")] = None,
                          soft_delete_days: Annotated[Optional[int], typer.Option("--soft-delete-duration", help="Days (14-180).")] = None,
                          immutability: Annotated[Optional[str], typer.Option("--immutability-state", help="Disabled, Enabled or Locked (irreversible).")] = None,
                          approval: ApprovalOpt = None):
    st = state(ctx)
    body = {"storage_redundancy": redundancy, "soft_delete_days": soft_delete_days, "immutability": immutability, "approval_id": approval}
    st.show(st.client.patch(f"/subscriptions/{subscription}/vaults/{name}/backup-properties", {k: v for k, v in body.items() if v is not None}))


@vault.command("verify")
@handled
def vault_verify(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                 read_data: Annotated[bool, typer.Option("--read-data", help="Re-read and authenticate stored data.")] = False,
                 subset: Annotated[Optional[str], typer.Option("--read-data-subset", help="n/m or p%: a sample of the data.")] = None,
                 wait: Annotated[bool, typer.Option("--wait")] = False):
    from haven.cli.commands.protection import _wait

    st = state(ctx)
    body = {"read_data": read_data or subset is not None, "read_data_subset": subset}
    job = st.client.post(f"/subscriptions/{subscription}/vaults/{name}/verify", body)
    if wait:
        job = _wait(st, subscription, job["id"], 24 * 3600)
    st.show(job)
    if wait and (job["status"] != "Completed" or not job.get("result", {}).get("ok", False)):
        raise typer.Exit(1)


encryption_key = typer.Typer(help="The key that wraps a vault's data key.", no_args_is_help=True)
vault.add_typer(encryption_key, name="encryption-key")


@encryption_key.command("set")
@handled
def encryption_key_set(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                       key_vault: Annotated[Optional[str], typer.Option("--key-vault", help="Key vault of the vault's region.")] = None,
                       key: Annotated[Optional[str], typer.Option("--key", help="KEK name; omit both to go back to the master key.")] = None):
    st = state(ctx)
    st.show(st.client.put(f"/subscriptions/{subscription}/vaults/{name}/encryption-key", {"key_vault": key_vault, "key": key}))


@encryption_key.command("rotate")
@handled
def encryption_key_rotate(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.post(f"/subscriptions/{subscription}/vaults/{name}/encryption-key/rotate"))


@vault.command("alert-settings")
@handled
def alert_settings(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
                   webhook: Annotated[Optional[str], typer.Option("--webhook", help="URL that receives alerts as JSON ('' to remove).")] = None,
                   email: Annotated[Optional[str], typer.Option("--email", help="Address that receives alerts ('' to remove).")] = None):
    st = state(ctx)
    body = {k: v for k, v in (("webhook", webhook), ("email", email)) if v is not None}
    st.show(st.client.put(f"/subscriptions/{subscription}/vaults/{name}/alert-settings", body))


@vault.command("alerts")
@handled
def alerts(ctx: typer.Context, subscription: SubOpt, name: Annotated[str, typer.Option("--name", "-n")],
           limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list(f"/subscriptions/{subscription}/vaults/{name}/alerts", ["created_at", "severity", "kind", "message", "delivered"],
                         limit, cursor)


# ---- policies ----

def _policy_body(policy_json: str | None, frequency: str | None, times: list[str] | None, weekdays: list[int] | None,
                 timezone: str | None, daily: int | None, weekly: int | None, monthly: int | None, yearly: int | None) -> dict:
    if policy_json:
        text = Path(policy_json[1:]).read_text() if policy_json.startswith("@") else policy_json
        try:
            return json.loads(text)
        except ValueError as e:
            raise UserError(f"--policy is not valid JSON: {e}", "Pass a JSON object with 'schedule' and 'retention', or @file.json.") from None
    body: dict = {}
    if frequency or times or weekdays or timezone:
        body["schedule"] = {"frequency": frequency or "daily", "times": times or ["22:30"], "weekdays": weekdays or [], "timezone": timezone or "UTC"}
    if any(v is not None for v in (daily, weekly, monthly, yearly)):
        body["retention"] = {"daily_days": daily, "weekly_weeks": weekly, "monthly_months": monthly, "yearly_years": yearly}
    return body


PolicyJson = Annotated[Optional[str], typer.Option("--policy", help="The policy as JSON, or @file.json.")]
Freq = Annotated[Optional[str], typer.Option("--frequency", help="daily, weekly or hourly")]
Times = Annotated[Optional[list[str]], typer.Option("--time", help="Run time HH:MM, on the hour or the half hour as in Azure (e.g. 01:00, 22:30); daily: 1 to 3 times (repeat the option).")]
Days = Annotated[Optional[list[int]], typer.Option("--weekday", help="0=Monday … 6=Sunday (weekly; repeatable).")]
Tz = Annotated[Optional[str], typer.Option("--timezone")]
Daily = Annotated[Optional[int], typer.Option("--daily-days")]
Weekly = Annotated[Optional[int], typer.Option("--weekly-weeks")]
Monthly = Annotated[Optional[int], typer.Option("--monthly-months")]
Yearly = Annotated[Optional[int], typer.Option("--yearly-years")]


@policy.command("create")
@handled
def policy_create(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, name: Annotated[str, typer.Option("--name", "-n")],
                  policy_json: PolicyJson = None, frequency: Freq = None, times: Times = None, weekdays: Days = None, timezone: Tz = None,
                  daily: Daily = None, weekly: Weekly = None, monthly: Monthly = None, yearly: Yearly = None):
    st = state(ctx)
    body = _policy_body(policy_json, frequency, times, weekdays, timezone, daily, weekly, monthly, yearly)
    body.setdefault("schedule", {"frequency": "daily", "times": ["22:30"], "timezone": "UTC"})
    body.setdefault("retention", {"daily_days": 30})
    body["name"] = name
    st.show(st.client.post(f"/subscriptions/{subscription}/vaults/{vault_name}/policies", body))


@policy.command("set")
@handled
def policy_set(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, name: Annotated[str, typer.Option("--name", "-n")],
               policy_json: PolicyJson = None, frequency: Freq = None, times: Times = None, weekdays: Days = None, timezone: Tz = None,
               daily: Daily = None, weekly: Weekly = None, monthly: Monthly = None, yearly: Yearly = None,
               approval: ApprovalOpt = None):
    st = state(ctx)
    body = _policy_body(policy_json, frequency, times, weekdays, timezone, daily, weekly, monthly, yearly)
    body.pop("name", None)
    if approval:
        body["approval_id"] = approval
    st.show(st.client.put(f"/subscriptions/{subscription}/vaults/{vault_name}/policies/{name}", body))


@policy.command("show")
@handled
def policy_show(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/vaults/{vault_name}/policies/{name}"))


@policy.command("list")
@handled
def policy_list(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list(f"/subscriptions/{subscription}/vaults/{vault_name}/policies", POLICY_COLUMNS, limit, cursor)


@policy.command("delete")
@handled
def policy_delete(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, name: Annotated[str, typer.Option("--name", "-n")]):
    state(ctx).client.delete(f"/subscriptions/{subscription}/vaults/{vault_name}/policies/{name}")


@policy.command("get-default-for-vm")
@handled
def policy_default(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/vaults/{vault_name}/default-policy-for-vm"))


@policy.command("list-associated-items")
@handled
def policy_items(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/vaults/{vault_name}/policies/{name}/items"))

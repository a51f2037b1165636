"""haven subscription … / haven token … / haven vm … / haven region …"""

from typing import Annotated, Optional

import typer

from haven.cli.state import CursorOpt, LimitOpt, handled, state

subscription = typer.Typer(help="Subscriptions: the tenant and access-control scope.", no_args_is_help=True)
token = typer.Typer(help="Bearer tokens and roles.", no_args_is_help=True)
vm = typer.Typer(help="VMs reported by host agents.", no_args_is_help=True)
region = typer.Typer(help="Regions configured on the server.", no_args_is_help=True)


@subscription.command("create")
@handled
def subscription_create(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.post("/subscriptions", {"name": name}))


@subscription.command("list")
@handled
def subscription_list(ctx: typer.Context):
    st = state(ctx)
    st.show(st.client.get("/subscriptions"), ["name", "id", "created_at"])


@subscription.command("show")
@handled
def subscription_show(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n")]):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{name}"))


@token.command("create")
@handled
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for.")],
    role: Annotated[str, typer.Option("--role", help="Reader, Operator, Contributor or Owner.")] = "Reader",
    subscription: Annotated[Optional[str], typer.Option("--subscription", "-s", help="Scope; omit for every subscription.")] = None,
    expires_in_days: Annotated[Optional[int], typer.Option("--expires-in-days")] = None,
    principal: Annotated[Optional[str], typer.Option("--principal", help="Principal name (default: the token name).")] = None,
):
    st = state(ctx)
    body = {"name": name, "role": role, "subscription": subscription, "expires_in_days": expires_in_days, "principal": principal}
    st.show(st.client.post("/tokens", {k: v for k, v in body.items() if v is not None}))


@token.command("list")
@handled
def token_list(ctx: typer.Context):
    st = state(ctx)
    st.show(st.client.get("/tokens"), ["id", "name", "principal", "created_at", "expires_at", "revoked"])


@token.command("revoke")
@handled
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Option("--id")]):
    state(ctx).client.delete(f"/tokens/{token_id}")


@vm.command("list")
@handled
def vm_list(ctx: typer.Context, region_name: Annotated[Optional[str], typer.Option("--region")] = None, limit: LimitOpt = None, cursor: CursorOpt = None):
    state(ctx).show_list("/vms", ["name", "host", "region", "power_state", "uuid"], limit, cursor, region=region_name)


@vm.command("refresh")
@handled
def vm_refresh(ctx: typer.Context):
    """Have the server's own hosts report their VMs now (a new VM shows at once)."""
    st = state(ctx)
    st.show(st.client.post("/vms/refresh"))


@region.command("list")
@handled
def region_list(ctx: typer.Context):
    st = state(ctx)
    st.show(st.client.get("/regions"))

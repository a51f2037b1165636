"""haven resource-guard … and haven vault resource-guard … (multi-user authorization)."""

from typing import Annotated, Optional
from urllib.parse import quote

import typer

from haven.cli.state import SubOpt, VaultOpt, handled, state

__all__ = ["resource_guard", "vault_guard", "ApprovalOpt"]

resource_guard = typer.Typer(help="Resource guards: a second principal approves destructive operations on guarded vaults.",
                             no_args_is_help=True)
approver = typer.Typer(help="Who holds the Guard Approver role on a guard.", no_args_is_help=True)
requests = typer.Typer(help="Approval requests for protected operations.", no_args_is_help=True)
audit = typer.Typer(help="Every step of multi-user authorization, refusals included.", no_args_is_help=True)
resource_guard.add_typer(approver, name="approver")
resource_guard.add_typer(requests, name="requests")
resource_guard.add_typer(audit, name="audit")
vault_guard = typer.Typer(help="The resource guard of a vault.", no_args_is_help=True)

ApprovalOpt = Annotated[Optional[str], typer.Option("--approval", help="Id of the approved request for exactly this call (guarded vaults).")]
GuardOpt = Annotated[str, typer.Option("--name", "-n", help="Resource guard name.")]
RequestOpt = Annotated[str, typer.Option("--request", help="Approval request id.")]
GUARD_COLUMNS = ["name", "approval_window_minutes", "approvers", "protected_vaults"]
REQUEST_COLUMNS = ["id", "vault", "operation", "requester", "status", "created_at", "expires_at", "decided_by"]
AUDIT_COLUMNS = ["time", "event", "principal", "vault", "operation", "request_id", "code"]


def _guards(sub: str) -> str:
    return f"/subscriptions/{sub}/resource-guards"


@resource_guard.command("create")
@handled
def guard_create(ctx: typer.Context, subscription: SubOpt, name: GuardOpt,
                 window: Annotated[Optional[int], typer.Option("--approval-window-minutes", help="5-1440 (default 240).")] = None):
    st = state(ctx)
    body = {"name": name} | ({"approval_window_minutes": window} if window is not None else {})
    st.show(st.client.post(_guards(subscription), body))


@resource_guard.command("list")
@handled
def guard_list(ctx: typer.Context, subscription: SubOpt):
    st = state(ctx)
    st.show(st.client.get(_guards(subscription)), GUARD_COLUMNS)


@resource_guard.command("show")
@handled
def guard_show(ctx: typer.Context, subscription: SubOpt, name: GuardOpt):
    st = state(ctx)
    st.show(st.client.get(f"{_guards(subscription)}/{name}"))


@resource_guard.command("delete")
@handled
def guard_delete(ctx: typer.Context, subscription: SubOpt, name: GuardOpt):
    state(ctx).client.delete(f"{_guards(subscription)}/{name}")


@approver.command("add")
@handled
def approver_add(ctx: typer.Context, subscription: SubOpt, name: GuardOpt,
                 principal: Annotated[str, typer.Option("--principal", help="Principal name.")]):
    st = state(ctx)
    st.show(st.client.put(f"{_guards(subscription)}/{name}/approvers/{quote(principal, safe='')}", {}))


@approver.command("remove")
@handled
def approver_remove(ctx: typer.Context, subscription: SubOpt, name: GuardOpt,
                    principal: Annotated[str, typer.Option("--principal", help="Principal name.")]):
    st = state(ctx)
    st.show(st.client.delete(f"{_guards(subscription)}/{name}/approvers/{quote(principal, safe='')}"))


@resource_guard.command("approve")
@handled
def approve(ctx: typer.Context, request: RequestOpt, comment: Annotated[Optional[str], typer.Option("--comment")] = None):
    st = state(ctx)
    st.show(st.client.post(f"/resource-guard-requests/{request}/approve", {"comment": comment}))


@resource_guard.command("reject")
@handled
def reject(ctx: typer.Context, request: RequestOpt, comment: Annotated[Optional[str], typer.Option("--comment")] = None):
    st = state(ctx)
    st.show(st.client.post(f"/resource-guard-requests/{request}/reject", {"comment": comment}))


@requests.command("list")
@handled
def requests_list(ctx: typer.Context, guard: Annotated[Optional[str], typer.Option("--guard-id")] = None,
                  vault: Annotated[Optional[str], typer.Option("--vault", help="Vault name or id.")] = None,
                  status: Annotated[Optional[str], typer.Option("--status", help="Pending, Approved, Rejected, Used or Expired.")] = None):
    st = state(ctx)
    st.show(st.client.get("/resource-guard-requests", guard=guard, vault=vault, status=status), REQUEST_COLUMNS)


@requests.command("show")
@handled
def requests_show(ctx: typer.Context, request: RequestOpt):
    st = state(ctx)
    st.show(st.client.get(f"/resource-guard-requests/{request}"))


@audit.command("list")
@handled
def audit_list(ctx: typer.Context, guard: Annotated[Optional[str], typer.Option("--guard-id")] = None,
               vault: Annotated[Optional[str], typer.Option("--vault", help="Vault name or id.")] = None):
    st = state(ctx)
    st.show(st.client.get("/resource-guard-audit", guard=guard, vault=vault), AUDIT_COLUMNS)


@vault_guard.command("set")
@handled
def vault_guard_set(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt,
                    guard: Annotated[str, typer.Option("--guard", help="Resource guard name or id.")],
                    guard_subscription: Annotated[Optional[str], typer.Option("--guard-subscription", help="The guard's subscription (default: the vault's).")] = None,
                    approval: ApprovalOpt = None):
    st = state(ctx)
    body = {"guard": guard, "guard_subscription": guard_subscription, "approval_id": approval}
    st.show(st.client.put(f"/subscriptions/{subscription}/vaults/{vault_name}/resource-guard", {k: v for k, v in body.items() if v}))


@vault_guard.command("show")
@handled
def vault_guard_show(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt):
    st = state(ctx)
    st.show(st.client.get(f"/subscriptions/{subscription}/vaults/{vault_name}/resource-guard"))


@vault_guard.command("remove")
@handled
def vault_guard_remove(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, approval: ApprovalOpt = None):
    st = state(ctx)
    query = f"?approval_id={quote(approval, safe='')}" if approval else ""
    st.show(st.client.delete(f"/subscriptions/{subscription}/vaults/{vault_name}/resource-guard{query}"))

"""Multi-user authorization through the API, with real tokens: every protected operation on a guarded vault
is refused without an approval (and changes nothing), goes through once with another approver's approval,
and the approval is bound to its operation, vault, parameters, requester and time window; all of it audited."""

from datetime import timedelta

import pytest

from tests.guard.conftest import API, GUARDS, V1, V2


def _with_approval(call: tuple, approval: str) -> tuple:
    method, path, body = call
    if method == "DELETE":
        return method, f"{path}?approval_id={approval}", body
    return method, path, {**(body or {}), "approval_id": approval}


def _state(gw):
    vault = gw.call("alice", "GET", V1, expect=200)
    item = gw.call("alice", "GET", f"{V1}/items/web1", expect=200)
    policy = gw.call("alice", "GET", f"{V1}/policies/DefaultPolicy", expect=200)
    guard = gw.call("alice", "GET", f"{V1}/resource-guard", expect=200)
    return {"soft_delete_days": vault["soft_delete_days"], "immutability": vault["immutability"],
            "item_policy": item["policy"], "item_state": item["protection_state"],
            "retention": policy["retention"], "guarded": guard["guarded"]}


def _prep_short_policy(gw):
    gw.call("alice", "POST", f"{V1}/policies", {"name": "short", "schedule": {"frequency": "daily", "times": ["22:30"]},
                                                 "retention": {"daily_days": 7}}, expect=201)


def _prep_stopped_with_points(gw):
    gw.backup()
    gw.call("alice", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": False}, expect=200)


# name -> (preparation: changes that need no approval, the protected call, what it changes, a reset without approval)
OPERATIONS = {
    "ReduceSoftDeletePeriod": (
        lambda gw: gw.call("alice", "PATCH", f"{V1}/backup-properties", {"soft_delete_days": 30}, expect=200),
        ("PATCH", f"{V1}/backup-properties", {"soft_delete_days": 14}),
        {"soft_delete_days": 14},
        lambda gw: gw.call("alice", "PATCH", f"{V1}/backup-properties", {"soft_delete_days": 30}, expect=200)),
    "DisableImmutability": (
        lambda gw: gw.call("alice", "PATCH", f"{V1}/backup-properties", {"immutability": "Enabled"}, expect=200),
        ("PATCH", f"{V1}/backup-properties", {"immutability": "Disabled"}),
        {"immutability": "Disabled"},
        lambda gw: gw.call("alice", "PATCH", f"{V1}/backup-properties", {"immutability": "Enabled"}, expect=200)),
    "ModifyPolicyReducedRetention": (
        lambda gw: None,
        ("PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 7}}),
        {"retention": {"daily_days": 7, "weekly_weeks": None, "weekly_days": [6], "monthly_months": None, "yearly_years": None}},
        lambda gw: gw.call("alice", "PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 30}}, expect=200)),
    "ModifyProtectionReducedRetention": (
        _prep_short_policy,
        ("PUT", f"{V1}/items/web1/policy", {"policy": "short"}),
        {"item_policy": "short"},
        lambda gw: gw.call("alice", "PUT", f"{V1}/items/web1/policy", {"policy": "DefaultPolicy"}, expect=200)),
    "ModifyProtectionReducedRetention (resume)": (
        _prep_stopped_with_points,
        ("POST", f"{V1}/items", {"vm": "web1"}),
        {"item_state": "Protected", "item_policy": "DefaultPolicy"},
        lambda gw: gw.call("alice", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": False}, expect=200)),
    "StopProtectionWithDeleteData": (
        lambda gw: None,
        ("POST", f"{V1}/items/web1/disable", {"delete_backup_data": True}),
        {"item_state": "SoftDeleted", "item_policy": None},
        lambda gw: (gw.call("alice", "POST", f"{V1}/items/web1/undelete", expect=200),
                    gw.call("alice", "POST", f"{V1}/items", {"vm": "web1"}, expect=201))),
    "RemoveResourceGuard": (
        lambda gw: None,
        ("DELETE", f"{V1}/resource-guard", None),
        {"guarded": False},
        lambda gw: gw.call("alice", "PUT", f"{V1}/resource-guard", {"guard": "g1", "guard_subscription": "sec"}, expect=200)),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_protected_operation_needs_another_approvers_approval_and_runs_once(gw, name):
    prep, call, changes, reset = OPERATIONS[name]
    prep(gw)
    before = _state(gw)
    # without an approval: refused, an approval request made, nothing changed
    error = gw.refused("alice", *call)
    request_id = error["details"]["request_id"]
    assert error["details"]["operation"] == name.split(" ")[0]
    assert "haven resource-guard approve --request " + request_id in error["recommendation"]
    assert _state(gw) == before
    request = gw.call("sam", "GET", f"{API}/resource-guard-requests/{request_id}", expect=200)
    assert (request["status"], request["requester"], request["vault"], request["guard"]) == ("Pending", "alice", "v1", "g1")
    # the pending request does not authorize anything
    gw.refused("alice", *_with_approval(call, request_id), code="UserErrorResourceGuardApprovalNotApproved")
    assert _state(gw) == before
    # another approver approves; the same call with the approval goes through
    approved = gw.call("sam", "POST", f"{API}/resource-guard-requests/{request_id}/approve", {"comment": "change ticket 42"}, expect=200)
    assert approved["status"] == "Approved" and approved["decided_by"] == "sam"
    gw.call("alice", *_with_approval(call, request_id))
    after = _state(gw)
    assert after == {**before, **changes}
    assert gw.call("sam", "GET", f"{API}/resource-guard-requests/{request_id}", expect=200)["status"] == "Used"
    # once: with the state set back, the same approval is refused and nothing changes
    reset(gw)
    restored = _state(gw)
    assert restored == before
    gw.refused("alice", *_with_approval(call, request_id), code="UserErrorResourceGuardApprovalAlreadyUsed")
    assert _state(gw) == before


def test_requester_cannot_approve_own_request(gw):
    error = gw.refused("alice", "PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 7}})
    rid = error["details"]["request_id"]
    gw.refused("alice", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardSelfApproval")
    assert gw.call("sam", "GET", f"{API}/resource-guard-requests/{rid}", expect=200)["status"] == "Pending"
    gw.refused("alice", "PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 7}, "approval_id": rid},
               code="UserErrorResourceGuardApprovalNotApproved")
    assert gw.call("alice", "GET", f"{V1}/policies/DefaultPolicy", expect=200)["retention"]["daily_days"] == 30


def test_approval_needs_the_guard_approver_role(gw):
    error = gw.refused("alice", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": True})
    rid = error["details"]["request_id"]
    # bob sees the request (Contributor on the vault's subscription) but holds no approver role
    assert gw.call("bob", "GET", f"{API}/resource-guard-requests/{rid}", expect=200)["status"] == "Pending"
    gw.refused("bob", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardApproverRequired")
    # even the global Owner holds no approver role by default
    gw.refused("root", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardApproverRequired")
    # another subscription's Owner does not even see it
    gw.refused("olga", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardRequestNotFound", status=404)
    assert gw.call("olga", "GET", f"{API}/resource-guard-requests", expect=200) == []
    # an approver whose role was removed can no longer approve
    gw.call("sam", "DELETE", f"{GUARDS}/g1/approvers/sue", expect=200)
    gw.refused("sue", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardApproverRequired")
    assert gw.call("sam", "GET", f"{API}/resource-guard-requests/{rid}", expect=200)["status"] == "Pending"
    assert gw.call("alice", "GET", f"{V1}/items/web1", expect=200)["protection_state"] == "Protected"
    # an approver with no role on any vault's subscription approves, and alice's call goes through
    gw.call("sam", "POST", f"{API}/resource-guard-requests/{rid}/approve", expect=200)
    gw.call("alice", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": True, "approval_id": rid}, expect=200)
    assert gw.call("alice", "GET", f"{V1}/items/web1", expect=200)["protection_state"] == "SoftDeleted"


def test_requests_and_approvals_expire_after_the_guards_window(gw, clock):
    body = {"retention": {"daily_days": 7}}
    path = f"{V1}/policies/DefaultPolicy"
    rid = gw.refused("alice", "PUT", path, body)["details"]["request_id"]
    clock.advance(timedelta(hours=4, minutes=1))  # default window: 4 hours
    gw.refused("sam", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardRequestNotPending", status=409)
    assert gw.call("sam", "GET", f"{API}/resource-guard-requests/{rid}", expect=200)["status"] == "Expired"
    # approved in time, used too late
    rid2 = gw.refused("alice", "PUT", path, body)["details"]["request_id"]
    assert rid2 != rid
    clock.advance(timedelta(hours=3))
    gw.call("sam", "POST", f"{API}/resource-guard-requests/{rid2}/approve", expect=200)
    clock.advance(timedelta(hours=3, minutes=59))  # the approval lasts one window from its approval
    gw.call("sam", "GET", f"{API}/resource-guard-requests/{rid2}", expect=200)
    clock.advance(timedelta(minutes=2))
    gw.refused("alice", "PUT", path, {**body, "approval_id": rid2}, code="UserErrorResourceGuardApprovalExpired")
    assert gw.call("alice", "GET", path, expect=200)["retention"]["daily_days"] == 30
    # the window is the guard's: a 30-minute guard
    gw.call("sam", "POST", GUARDS, {"name": "g-short", "approval_window_minutes": 30}, expect=201)
    gw.call("sam", "PUT", f"{GUARDS}/g-short/approvers/sue", expect=200)
    gw.call("alice", "PUT", f"{V2}/resource-guard", {"guard": "g-short", "guard_subscription": "sec"}, expect=200)
    rid3 = gw.refused("alice", "PUT", f"{V2}/policies/DefaultPolicy", body)["details"]["request_id"]
    clock.advance(timedelta(minutes=31))
    gw.refused("sue", "POST", f"{API}/resource-guard-requests/{rid3}/approve", code="UserErrorResourceGuardRequestNotPending", status=409)
    gw.refused("sam", "POST", GUARDS, {"name": "g-bad", "approval_window_minutes": 2}, code="UserErrorResourceGuardApprovalWindowInvalid", status=400)


def test_an_approval_is_bound_to_its_operation_vault_parameters_and_requester(gw):
    gw.call("alice", "PUT", f"{V2}/resource-guard", {"guard": "g1", "guard_subscription": "sec"}, expect=200)
    body = {"retention": {"daily_days": 7}}
    rid = gw.refused("alice", "PUT", f"{V1}/policies/DefaultPolicy", body)["details"]["request_id"]
    gw.call("sue", "POST", f"{API}/resource-guard-requests/{rid}/approve", expect=200)
    mismatch = "UserErrorResourceGuardApprovalMismatch"
    # other parameters
    gw.refused("alice", "PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 10}, "approval_id": rid}, code=mismatch)
    # another operation on the same vault
    gw.refused("alice", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": True, "approval_id": rid}, code=mismatch)
    gw.refused("alice", "DELETE", f"{V1}/resource-guard?approval_id={rid}", code=mismatch)
    # the same operation and parameters on another vault under the same guard
    gw.refused("alice", "PUT", f"{V2}/policies/DefaultPolicy", {**body, "approval_id": rid}, code="UserErrorResourceGuardApprovalNotFound")
    # another requester
    gw.refused("bob", "PUT", f"{V1}/policies/DefaultPolicy", {**body, "approval_id": rid}, code=mismatch)
    # a made-up id
    gw.refused("alice", "PUT", f"{V1}/policies/DefaultPolicy", {**body, "approval_id": "0" * 32}, code="UserErrorResourceGuardApprovalNotFound")
    # none of that changed anything or used the approval
    assert gw.call("alice", "GET", f"{V1}/policies/DefaultPolicy", expect=200)["retention"]["daily_days"] == 30
    assert gw.call("alice", "GET", f"{V2}/policies/DefaultPolicy", expect=200)["retention"]["daily_days"] == 30
    assert gw.call("alice", "GET", f"{V1}/items/web1", expect=200)["protection_state"] == "Protected"
    assert gw.call("alice", "GET", f"{V1}/resource-guard", expect=200)["guarded"] is True
    gw.call("alice", "PUT", f"{V1}/policies/DefaultPolicy", {**body, "approval_id": rid}, expect=200)
    assert gw.call("alice", "GET", f"{V1}/policies/DefaultPolicy", expect=200)["retention"]["daily_days"] == 7


def test_an_unguarded_vault_behaves_as_before(gw):
    assert gw.call("alice", "GET", f"{V2}/resource-guard", expect=200)["guarded"] is False
    gw.call("alice", "PATCH", f"{V2}/backup-properties", {"soft_delete_days": 30}, expect=200)
    gw.call("alice", "PATCH", f"{V2}/backup-properties", {"soft_delete_days": 14}, expect=200)
    gw.call("alice", "PATCH", f"{V2}/backup-properties", {"immutability": "Enabled"}, expect=200)
    gw.call("alice", "PATCH", f"{V2}/backup-properties", {"immutability": "Disabled"}, expect=200)
    gw.call("alice", "PUT", f"{V2}/policies/DefaultPolicy", {"retention": {"daily_days": 7}}, expect=200)
    gw.call("bob", "POST", f"{V2}/items/web2/disable", {"delete_backup_data": True}, expect=200)
    assert gw.call("alice", "GET", f"{V2}/items/web2", expect=200)["protection_state"] == "SoftDeleted"
    assert [r for r in gw.call("root", "GET", f"{API}/resource-guard-requests", expect=200) if r["vault"] == "v2"] == []


def test_changes_that_keep_or_lengthen_protection_need_no_approval_on_a_guarded_vault(gw):
    gw.call("bob", "PATCH", f"{V1}/backup-properties", {"soft_delete_days": 60, "immutability": "Enabled"}, expect=200)
    gw.call("bob", "PUT", f"{V1}/policies/DefaultPolicy", {"retention": {"daily_days": 90, "monthly_months": 12}}, expect=200)
    gw.call("bob", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": False}, expect=200)  # data kept
    assert gw.call("sam", "GET", f"{API}/resource-guard-requests", expect=200) == []


def test_replacing_a_vaults_guard_is_removing_it(gw):
    gw.call("sam", "POST", GUARDS, {"name": "g2"}, expect=201)
    error = gw.refused("alice", "PUT", f"{V1}/resource-guard", {"guard": "g2", "guard_subscription": "sec"})
    assert error["details"]["operation"] == "RemoveResourceGuard"
    assert gw.call("alice", "GET", f"{V1}/resource-guard", expect=200)["guard"] == "g1"
    # a guard with vaults cannot be deleted
    gw.refused("sam", "DELETE", f"{GUARDS}/g1", code="UserErrorResourceGuardInUse", status=409)


def test_guard_management_is_the_guard_subscriptions_owners(gw):
    # the backup administrator cannot make a guard in, or name approvers of, the security subscription
    gw.refused("alice", "POST", GUARDS, {"name": "mine"}, code="UserErrorAuthorizationFailed")
    gw.refused("alice", "PUT", f"{GUARDS}/g1/approvers/bob", code="UserErrorAuthorizationFailed")
    gw.refused("alice", "DELETE", f"{GUARDS}/g1/approvers/sam", code="UserErrorAuthorizationFailed")
    # a vault can be put only under a guard its caller can read
    gw.refused("bob", "PUT", f"{V2}/resource-guard", {"guard": "g1", "guard_subscription": "sec"},
               code="UserErrorSubscriptionNotFound", status=404)
    # host agents and unknown principals cannot approve
    gw.refused("sam", "PUT", f"{GUARDS}/g1/approvers/nobody", code="UserErrorResourceGuardPrincipalNotFound", status=404)
    assert gw.call("sam", "GET", f"{GUARDS}/g1", expect=200)["approvers"] == ["alice", "sam", "sue"]


def test_a_subscription_owner_cannot_mint_a_token_for_an_approver_or_a_global_owner(gw):
    """Before: an Owner of prod got a working token for any principal by naming it, the guard's approvers
    and the global Owner included, and so approved its own requests."""
    for victim in ("sam", "local-owner"):
        gw.refused("alice", "POST", f"{API}/tokens", {"name": "x", "role": "Reader", "subscription": "prod", "principal": victim},
                   code="UserErrorPrincipalNotOwned")
    # still allowed: a new principal, or one whose roles the caller owns
    gw.call("alice", "POST", f"{API}/tokens", {"name": "ci", "role": "Reader", "subscription": "prod", "principal": "ci"}, expect=201)
    gw.call("alice", "POST", f"{API}/tokens", {"name": "ci2", "role": "Operator", "subscription": "prod", "principal": "ci"}, expect=201)


def test_audit_lists_every_step(gw):
    body = {"retention": {"daily_days": 7}}
    path = f"{V1}/policies/DefaultPolicy"
    rid = gw.refused("alice", "PUT", path, body)["details"]["request_id"]
    gw.refused("alice", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardSelfApproval")
    gw.refused("bob", "POST", f"{API}/resource-guard-requests/{rid}/approve", code="UserErrorResourceGuardApproverRequired")
    gw.call("sue", "POST", f"{API}/resource-guard-requests/{rid}/approve", {"comment": "ok"}, expect=200)
    gw.refused("alice", "PUT", path, {"retention": {"daily_days": 10}, "approval_id": rid}, code="UserErrorResourceGuardApprovalMismatch")
    gw.call("alice", "PUT", path, {**body, "approval_id": rid}, expect=200)
    rid2 = gw.refused("bob", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": True})["details"]["request_id"]
    gw.call("sam", "POST", f"{API}/resource-guard-requests/{rid2}/reject", {"comment": "no"}, expect=200)
    gw.refused("bob", "POST", f"{V1}/items/web1/disable", {"delete_backup_data": True, "approval_id": rid2},
               code="UserErrorResourceGuardApprovalNotApproved")
    events = [(e["event"], e["principal"], e["request_id"], e["code"]) for e in gw.audit("sam", vault="v1")]
    assert events == [
        ("VaultGuarded", "alice", None, None),
        ("Requested", "alice", rid, "UserErrorMultiUserAuthorizationRequired"),
        ("ApprovalRefused", "alice", rid, "UserErrorResourceGuardSelfApproval"),
        ("ApprovalRefused", "bob", rid, "UserErrorResourceGuardApproverRequired"),
        ("Approved", "sue", rid, None),
        ("Refused", "alice", rid, "UserErrorResourceGuardApprovalMismatch"),
        ("Used", "alice", rid, None),
        ("Requested", "bob", rid2, "UserErrorMultiUserAuthorizationRequired"),
        ("Rejected", "sam", rid2, None),
        ("Refused", "bob", rid2, "UserErrorResourceGuardApprovalNotApproved"),
    ]
    # the vault's side sees the same; the guard's own events (creation, approvers) only the guard's side
    assert [e["event"] for e in gw.audit("bob", vault="v1")] == [e[0] for e in events]
    guard_events = [e["event"] for e in gw.audit("sam") if e["vault_id"] is None]
    assert guard_events == ["GuardCreated", "ApproverAdded", "ApproverAdded", "ApproverAdded"]
    assert gw.audit("olga") == []
    listed = {r["id"]: r["status"] for r in gw.call("sam", "GET", f"{API}/resource-guard-requests", expect=200)}
    assert listed == {rid: "Used", rid2: "Rejected"}

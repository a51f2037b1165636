"""One multi-user authorization flow through the CLI against a real server: the security admin makes a guard,
the backup admin puts a vault under it, shortens a retention, is refused with a request id, gets it approved
by the security admin, and repeats the command with --approval (once)."""

import re

import pytest

from tests.services.haven_server import HavenServer, run_cli as run


@pytest.fixture
def server(tmp_path):
    srv = HavenServer(tmp_path / "srv").start()
    yield srv
    srv.stop()



def test_guarded_retention_cut_needs_an_approval_from_the_cli(server):
    run(server, "subscription", "create", "--name", "prod")
    run(server, "subscription", "create", "--name", "sec")
    alice = run(server, "token", "create", "--name", "alice", "--role", "Owner", "--subscription", "prod")["token"]
    run(server, "token", "create", "--name", "alice-sec", "--principal", "alice", "--role", "Reader", "--subscription", "sec")
    sam = run(server, "token", "create", "--name", "sam", "--role", "Owner", "--subscription", "sec")["token"]
    guard = run(server, "resource-guard", "create", "-s", "sec", "--name", "g1", token=sam)
    assert guard["approval_window_minutes"] == 240
    assert run(server, "resource-guard", "approver", "add", "-s", "sec", "--name", "g1", "--principal", "sam", token=sam)["approvers"] == ["sam"]
    run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local", token=alice)
    linked = run(server, "vault", "resource-guard", "set", "-s", "prod", "-v", "v1", "--guard", "g1", "--guard-subscription", "sec", token=alice)
    assert linked["guarded"] and linked["guard"] == "g1"

    refused = run(server, "policy", "set", "-s", "prod", "-v", "v1", "--name", "DefaultPolicy", "--daily-days", "7", token=alice, expect=6)
    assert "UserErrorMultiUserAuthorizationRequired" in refused.output
    request_id = re.search(r"--approval ([0-9a-f]{32})", refused.output).group(1)
    assert run(server, "policy", "show", "-s", "prod", "-v", "v1", "--name", "DefaultPolicy", token=alice)["retention"]["daily_days"] == 30

    own = run(server, "resource-guard", "approve", "--request", request_id, token=alice, expect=6)
    assert "UserErrorResourceGuardApproverRequired" in own.output
    pending = run(server, "resource-guard", "requests", "list", "--status", "Pending", token=sam)
    assert [(r["id"], r["operation"], r["requester"]) for r in pending] == [(request_id, "ModifyPolicyReducedRetention", "alice")]
    assert run(server, "resource-guard", "approve", "--request", request_id, "--comment", "CHG-7", token=sam)["status"] == "Approved"

    changed = run(server, "policy", "set", "-s", "prod", "-v", "v1", "--name", "DefaultPolicy", "--daily-days", "7",
                  "--approval", request_id, token=alice)
    assert changed["retention"]["daily_days"] == 7
    run(server, "policy", "set", "-s", "prod", "-v", "v1", "--name", "DefaultPolicy", "--daily-days", "30", token=alice)  # longer: free
    again = run(server, "policy", "set", "-s", "prod", "-v", "v1", "--name", "DefaultPolicy", "--daily-days", "7",
                "--approval", request_id, token=alice, expect=6)
    assert "UserErrorResourceGuardApprovalAlreadyUsed" in again.output

    removal = run(server, "vault", "resource-guard", "remove", "-s", "prod", "-v", "v1", token=alice, expect=6)
    assert "UserErrorMultiUserAuthorizationRequired" in removal.output
    assert run(server, "vault", "resource-guard", "show", "-s", "prod", "-v", "v1", token=alice)["guarded"] is True
    events = [(e["event"], e["principal"]) for e in run(server, "resource-guard", "audit", "list", "--vault", "v1", token=sam)]
    assert events == [("VaultGuarded", "alice"), ("Requested", "alice"), ("ApprovalRefused", "alice"), ("Approved", "sam"),
                      ("Used", "alice"), ("Refused", "alice"), ("Requested", "alice")]

"""Every route of the OpenAPI document against nine principals: every cell as specified.

A denied call answers 401 (no or bad token), 403 (role too low) or 404 (a subscription the caller
has no role on is not revealed). An allowed call never answers 401 or 403.
"""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.domain.enums import Role
from tests.foundation.helpers import make_folder_vm, register_local_host

ANY, ANY_USER, GLOBAL_OWNER, AGENT = "any", "any-user", "global-owner", "agent-only"  # any: agents too
R, O, C, OW = Role.READER, Role.OPERATOR, Role.CONTRIBUTOR, Role.OWNER

S = "/api/v1/subscriptions/prod"
V = f"{S}/vaults/v1"
I = f"{V}/items/web1"

# (method, OpenAPI path) -> (role needed on "prod", request path, body)
MATRIX = {
    ("GET", "/api/v1/regions"): (ANY, "/api/v1/regions", None),
    ("GET", "/api/v1/regions/{region}/ip-ranges"): (ANY, "/api/v1/regions/local/ip-ranges", None),
    ("GET", "/api/v1/whoami"): (ANY, "/api/v1/whoami", None),
    ("GET", "/api/v1/hosts"): (ANY_USER, "/api/v1/hosts", None),
    ("GET", "/api/v1/vms"): (ANY_USER, "/api/v1/vms", None),
    ("POST", "/api/v1/hosts"): (GLOBAL_OWNER, "/api/v1/hosts", {"name": "authz-host", "region": "local"}),
    ("POST", "/api/v1/hosts/{host}/agent-token"): (GLOBAL_OWNER, "/api/v1/hosts/no-such-host/agent-token", None),
    # the agent API: host agents only, each for its own host (tests/agent)
    ("POST", "/api/v1/agent/hello"): (AGENT, "/api/v1/agent/hello", {"adapter": "folder:///nonexistent", "version": "t", "job_types": ["Backup"]}),
    ("PUT", "/api/v1/agent/vms"): (AGENT, "/api/v1/agent/vms", {"vms": []}),
    ("GET", "/api/v1/agent/storage-targets"): (AGENT, "/api/v1/agent/storage-targets", None),
    ("PUT", "/api/v1/agent/network"): (AGENT, "/api/v1/agent/network", {"config": {}, "vaults": {}}),
    ("POST", "/api/v1/agent/jobs/claim"): (AGENT, "/api/v1/agent/jobs/claim", {"worker": "w", "types": ["Backup"]}),
    ("POST", "/api/v1/agent/jobs/{job_id}/heartbeat"): (AGENT, "/api/v1/agent/jobs/0000/heartbeat", {"worker": "w"}),
    ("POST", "/api/v1/agent/jobs/{job_id}/progress"): (AGENT, "/api/v1/agent/jobs/0000/progress", {"worker": "w", "subtasks": []}),
    ("POST", "/api/v1/agent/jobs/{job_id}/unwrap"): (AGENT, "/api/v1/agent/jobs/0000/unwrap", {"worker": "w", "wrapped": "AAAA"}),
    ("POST", "/api/v1/agent/jobs/{job_id}/complete"): (AGENT, "/api/v1/agent/jobs/0000/complete", {"worker": "w", "outcome": {}}),
    ("POST", "/api/v1/agent/jobs/{job_id}/fail"): (AGENT, "/api/v1/agent/jobs/0000/fail", {"worker": "w", "error": {"code": "X", "message": "m"}}),
    ("POST", "/api/v1/subscriptions"): (GLOBAL_OWNER, "/api/v1/subscriptions", {"name": "made-by-test"}),
    ("GET", "/api/v1/subscriptions"): (ANY, "/api/v1/subscriptions", None),
    ("GET", "/api/v1/subscriptions/{subscription}"): (R, S, None),
    ("POST", "/api/v1/tokens"): (OW, "/api/v1/tokens", {"name": "t", "role": "Reader", "subscription": "prod"}),
    ("GET", "/api/v1/tokens"): (GLOBAL_OWNER, "/api/v1/tokens", None),
    ("DELETE", "/api/v1/tokens/{token_id}"): (GLOBAL_OWNER, "/api/v1/tokens/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults"): (C, f"{S}/vaults", {"name": "v-extra", "region": "local"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults"): (R, f"{S}/vaults", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}"): (R, V, None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/vaults/{vault}"): (C, V, None),
    ("PATCH", "/api/v1/subscriptions/{subscription}/vaults/{vault}/backup-properties"): (C, f"{V}/backup-properties", {"storage_redundancy": "GRS"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies"): (C, f"{V}/policies", {
        "name": "p2", "schedule": {"frequency": "daily", "times": ["01:00"]}, "retention": {"daily_days": 7}}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies"): (R, f"{V}/policies", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/default-policy-for-vm"): (R, f"{V}/default-policy-for-vm", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (R, f"{V}/policies/DefaultPolicy", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (C, f"{V}/policies/DefaultPolicy", {"retention": {"daily_days": 30}}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (C, f"{V}/policies/DefaultPolicy", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}/items"): (R, f"{V}/policies/DefaultPolicy/items", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items"): (O, f"{V}/items", {"vm": "web2"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items"): (R, f"{V}/items", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}"): (R, I, None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/policy"): (C, f"{I}/policy", {"policy": "DefaultPolicy"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/backup"): (O, f"{I}/backup", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/disable"): (C, f"{I}/disable", {"delete_backup_data": False}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/undelete"): (C, f"{I}/undelete", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/verify"): (O, f"{V}/verify", {"read_data": True}),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/encryption-key"): (C, f"{V}/encryption-key", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/encryption-key/rotate"): (C, f"{V}/encryption-key/rotate", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/alert-settings"): (C, f"{V}/alert-settings", {"webhook": "http://127.0.0.1:9/hook"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/alerts"): (R, f"{V}/alerts", None),
    ("GET", "/api/v1/subscriptions/{subscription}/protection/check-vm"): (R, f"{S}/protection/check-vm?vm=web1", None),
    ("GET", "/api/v1/subscriptions/{subscription}/prepare/check"): (R, f"{S}/prepare/check?vm=web1&timeout=2", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points"): (R, f"{I}/recovery-points", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}"): (R, f"{I}/recovery-points/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/restore-disks"): (
        O, f"{I}/recovery-points/0000/restore-disks", {"target": "/tmp/haven-authz-restore"}),
    # restore beyond restore-disks (tests/restore)
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/restore-vm"): (
        O, f"{I}/recovery-points/0000/restore-vm", {"target_vm_name": "authz-vm"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/replace-disks"): (
        C, f"{I}/recovery-points/0000/replace-disks", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/cross-region-restore-disks"): (
        O, f"{I}/recovery-points/0000/cross-region-restore-disks", {"target": "/tmp/haven-authz-crr"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/secondary-recovery-points"): (
        R, f"{I}/secondary-recovery-points", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/mount"): (
        O, f"{I}/recovery-points/0000/mount", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/unmount"): (
        O, f"{I}/recovery-points/0000/unmount", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/mounts"): (R, f"{I}/mounts", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/import"): (
        C, f"{S}/vaults/import", {"storage_url": "file:///tmp/haven-authz-import-none"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/jobs"): (R, f"{V}/jobs", None),
    ("GET", "/api/v1/subscriptions/{subscription}/jobs/{job_id}"): (R, f"{S}/jobs/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/jobs/{job_id}/stop"): (O, f"{S}/jobs/0000/stop", None),
    # key vaults: management needs a role; data-plane routes need Reader (then an access policy, tested in
    # tests/keyvault/test_access_policy.py), so they point at a key vault that does not exist here
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults"): (C, f"{S}/keyvaults", {"name": "kv-extra", "region": "local"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults"): (R, f"{S}/keyvaults", None),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (R, f"{S}/keyvaults/kv-none", None),
    ("PATCH", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (C, f"{S}/keyvaults/kv-none", {"purge_protection": True}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (C, f"{S}/keyvaults/kv-none", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/recover"): (C, f"{S}/keyvaults/kv-none/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/purge"): (C, f"{S}/keyvaults/kv-none/purge", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/access-policies/{principal}"): (
        C, f"{S}/keyvaults/kv-none/access-policies/x", {"template": "Haven Backup"}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/access-policies/{principal}"): (
        C, f"{S}/keyvaults/kv-none/access-policies/x", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys"): (R, f"{S}/keyvaults/kv-none/keys", {"name": "k"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys"): (R, f"{S}/keyvaults/kv-none/keys", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/restore"): (R, f"{S}/keyvaults/kv-none/keys/restore", {"value": "x"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}"): (R, f"{S}/keyvaults/kv-none/keys/k", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}"): (R, f"{S}/keyvaults/kv-none/keys/k", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/recover"): (R, f"{S}/keyvaults/kv-none/keys/k/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/purge"): (R, f"{S}/keyvaults/kv-none/keys/k/purge", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/backup"): (R, f"{S}/keyvaults/kv-none/keys/k/backup", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/wrapkey"): (R, f"{S}/keyvaults/kv-none/keys/k/wrapkey", {"value": "AAAA"}),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/unwrapkey"): (R, f"{S}/keyvaults/kv-none/keys/k/unwrapkey", {"value": "AAAA"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets"): (R, f"{S}/keyvaults/kv-none/secrets", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/restore"): (R, f"{S}/keyvaults/kv-none/secrets/restore", {"value": "x"}),
    ("PUT", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (R, f"{S}/keyvaults/kv-none/secrets/s", {"value": "v"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (R, f"{S}/keyvaults/kv-none/secrets/s", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (R, f"{S}/keyvaults/kv-none/secrets/s", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/recover"): (R, f"{S}/keyvaults/kv-none/secrets/s/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/purge"): (R, f"{S}/keyvaults/kv-none/secrets/s/purge", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/backup"): (R, f"{S}/keyvaults/kv-none/secrets/s/backup", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/restore-from-backup"): (
        R, f"{S}/keyvaults/kv-none/restore-from-backup", {"backup": {"blob": "x"}}),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/restore-from-recovery-point"): (
        R, f"{S}/keyvaults/kv-none/restore-from-recovery-point", {"vault": "v1", "vm": "web1", "recovery_point": "0000"}),
}

PRINCIPALS = ["none", "expired", "reader", "operator", "contributor", "owner", "other-owner", "global-owner", "agent"]
ROLE_OF = {"reader": R, "operator": O, "contributor": C, "owner": OW}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from haven.clock import FakeClock
    from haven.config import load_settings
    from haven.services.core import Haven
    from datetime import datetime, timezone

    home = tmp_path_factory.mktemp("authz")
    (home / "vms").mkdir()
    clock = FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))
    core = Haven(load_settings(home, database_url=f"sqlite:///{home / 'h.db'}"), clock=clock)
    root = core.auth.authenticate(core.auth.bootstrap_local_owner(home / "cred.json", "x"))
    core.subscriptions.create(root, "prod")
    core.subscriptions.create(root, "dev")
    core.vaults.create(root, "prod", "v1", "local")
    make_folder_vm(home / "vms", "web1")
    make_folder_vm(home / "vms", "web2")
    host_id = register_local_host(core, home / "vms")
    core.protection.enable(root, "prod", "v1", "web1")
    tokens = {"none": None, "expired": None}
    for who, role in ROLE_OF.items():
        tokens[who] = core.auth.create_token(root, who, role.value, "prod")["token"]
    tokens["other-owner"] = core.auth.create_token(root, "other", "Owner", "dev")["token"]
    tokens["global-owner"] = core.auth.create_token(root, "admin2", "Owner")["token"]
    tokens["expired"] = core.auth.create_token(root, "old", "Owner", expires_in=timedelta(hours=1))["token"]
    other_host, _ = core.inventory.register_host(root, "other-host", "local", "folder:///nonexistent")
    tokens["agent"] = core.auth.agent_token(other_host["id"], "other-host")
    clock.advance(timedelta(hours=2))  # the "old" token is now expired
    client = TestClient(create_app(core), raise_server_exceptions=False)
    yield client, tokens
    core.close()


def _allowed(principal: str, needed) -> bool:
    if principal in ("none", "expired"):
        return False
    if needed == AGENT:
        return principal == "agent"
    if principal == "agent":  # a host agent has no role: only what any principal may read
        return needed == ANY
    if principal == "global-owner":
        return True
    if needed in (ANY, ANY_USER):
        return True
    if needed == GLOBAL_OWNER:
        return False
    if principal == "other-owner":
        return False
    return ROLE_OF[principal].allows(needed)


def test_matrix_covers_every_route_of_the_openapi_document(world):
    client, _ = world
    doc = client.app.openapi()
    routes = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/")}
    assert routes == set(MATRIX), f"missing: {routes - set(MATRIX)}; stale: {set(MATRIX) - routes}"


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_authorization(world, route):
    client, tokens = world
    needed, path, body = MATRIX[route]
    method = route[0]
    # denied principals first, so that an allowed call that changes state cannot hide a denial
    for principal in sorted(PRINCIPALS, key=lambda p: _allowed(p, needed)):
        headers = {"Authorization": f"Bearer {tokens[principal]}"} if tokens[principal] else {}
        r = client.request(method, path, json=body, headers=headers)
        if principal in ("none", "expired"):
            assert r.status_code == 401, (principal, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("UserErrorTokenInvalid", "UserErrorTokenExpired")
        elif _allowed(principal, needed):
            assert r.status_code not in (401, 403), (principal, r.status_code, r.text)
        else:
            assert r.status_code in (403, 404), (principal, r.status_code, r.text)
            if r.status_code == 404:  # only a subscription the caller cannot see may be hidden
                assert principal in ("other-owner", "agent") and r.json()["error"]["code"] == "UserErrorSubscriptionNotFound"

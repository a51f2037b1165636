"""Every route of ``/api/v1`` against twelve principals, cell for cell as ``docs/security.md`` states.

The table in ``docs/security.md`` (section "/api/v1") is the specification: this test reads it, checks
that it lists exactly the routes of the OpenAPI document, and sends each route's request as each
principal. A denied call answers 401 (no, revoked or expired token), 403 (role too low, not an agent,
not the job's agent) or 404 (a subscription the caller has no role on is not revealed). An allowed call
never answers 401 or 403.

The job routes of the agent API (``/agent/jobs/{job_id}/…``) run against a real backup job queued for
host ``far1`` and claimed by its agent (``job-agent``) just before; ``other-job-agent`` is the agent of
host ``far2``, which holds a job of its own; ``other-host-agent`` is the agent of host ``far3``, which
holds none.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from tests.foundation.helpers import make_folder_vm, register_local_host
from tests.security.principals import bearer, user_tokens
from tests.security.table import read_table

S = "/api/v1/subscriptions/prod"
V = f"{S}/vaults/v1"
I = f"{V}/items/web1"

# (method, OpenAPI path) -> (request path, body): a request that is valid for an allowed principal
REQUESTS = {
    ("GET", "/api/v1/regions"): ("/api/v1/regions", None),
    ("GET", "/api/v1/regions/{region}/ip-ranges"): ("/api/v1/regions/local/ip-ranges", None),
    ("GET", "/api/v1/whoami"): ("/api/v1/whoami", None),
    ("GET", "/api/v1/hosts"): ("/api/v1/hosts", None),
    ("GET", "/api/v1/vms"): ("/api/v1/vms", None),
    ("POST", "/api/v1/vms/refresh"): ("/api/v1/vms/refresh", None),
    ("POST", "/api/v1/hosts"): ("/api/v1/hosts", {"name": "authz-host", "region": "local"}),
    ("POST", "/api/v1/hosts/{host}/agent-token"): ("/api/v1/hosts/no-such-host/agent-token", None),
    # the agent API: host agents only, each for its own host (tests/agent)
    ("POST", "/api/v1/agent/hello"): ("/api/v1/agent/hello", {"adapter": "folder:///nonexistent", "version": "t", "job_types": ["Backup"]}),
    ("PUT", "/api/v1/agent/vms"): ("/api/v1/agent/vms", {"vms": []}),
    ("GET", "/api/v1/agent/storage-targets"): ("/api/v1/agent/storage-targets", None),
    ("PUT", "/api/v1/agent/network"): ("/api/v1/agent/network", {"config": {}, "vaults": {}}),
    ("POST", "/api/v1/agent/jobs/claim"): ("/api/v1/agent/jobs/claim", {"worker": "w", "types": ["Backup"]}),
    ("POST", "/api/v1/agent/jobs/{job_id}/heartbeat"): ("/api/v1/agent/jobs/{job}/heartbeat", {"worker": "w"}),
    ("POST", "/api/v1/agent/jobs/{job_id}/progress"): ("/api/v1/agent/jobs/{job}/progress", {"worker": "w", "subtasks": []}),
    ("POST", "/api/v1/agent/jobs/{job_id}/unwrap"): ("/api/v1/agent/jobs/{job}/unwrap", {"worker": "w", "wrapped": "{wrapped}"}),
    ("POST", "/api/v1/agent/jobs/{job_id}/complete"): ("/api/v1/agent/jobs/{job}/complete", {"worker": "w", "outcome": {}}),
    ("POST", "/api/v1/agent/jobs/{job_id}/fail"): ("/api/v1/agent/jobs/{job}/fail", {"worker": "w", "error": {"code": "X", "message": "m"}}),
    ("POST", "/api/v1/subscriptions"): ("/api/v1/subscriptions", {"name": "made-by-test"}),
    ("GET", "/api/v1/subscriptions"): ("/api/v1/subscriptions", None),
    ("GET", "/api/v1/subscriptions/{subscription}"): (S, None),
    ("POST", "/api/v1/tokens"): ("/api/v1/tokens", {"name": "t", "role": "Reader", "subscription": "prod"}),
    ("GET", "/api/v1/tokens"): ("/api/v1/tokens", None),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("/api/v1/tokens/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults"): (f"{S}/vaults", {"name": "v-extra", "region": "local"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults"): (f"{S}/vaults", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}"): (V, None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/vaults/{vault}"): (V, None),
    ("PATCH", "/api/v1/subscriptions/{subscription}/vaults/{vault}/backup-properties"): (f"{V}/backup-properties", {"storage_redundancy": "GRS"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies"): (f"{V}/policies", {
        "name": "p2", "schedule": {"frequency": "daily", "times": ["01:00"]}, "retention": {"daily_days": 7}}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies"): (f"{V}/policies", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/default-policy-for-vm"): (f"{V}/default-policy-for-vm", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (f"{V}/policies/DefaultPolicy", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (f"{V}/policies/DefaultPolicy", {"retention": {"daily_days": 30}}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}"): (f"{V}/policies/DefaultPolicy", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/policies/{policy}/items"): (f"{V}/policies/DefaultPolicy/items", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items"): (f"{V}/items", {"vm": "web2"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items"): (f"{V}/items", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}"): (I, None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/policy"): (f"{I}/policy", {"policy": "DefaultPolicy"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/backup"): (f"{I}/backup", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/disable"): (f"{I}/disable", {"delete_backup_data": False}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/undelete"): (f"{I}/undelete", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/verify"): (f"{V}/verify", {"read_data": True}),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/encryption-key"): (f"{V}/encryption-key", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/encryption-key/rotate"): (f"{V}/encryption-key/rotate", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/alert-settings"): (f"{V}/alert-settings", {"webhook": "http://127.0.0.1:9/hook"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/alerts"): (f"{V}/alerts", None),
    ("GET", "/api/v1/subscriptions/{subscription}/protection/check-vm"): (f"{S}/protection/check-vm?vm=web1", None),
    ("GET", "/api/v1/subscriptions/{subscription}/prepare/check"): (f"{S}/prepare/check?vm=web1&timeout=2", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points"): (f"{I}/recovery-points", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}"): (f"{I}/recovery-points/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/restore-disks"): (
        f"{I}/recovery-points/0000/restore-disks", {"target": "/tmp/haven-authz-restore"}),
    # restore beyond restore-disks (tests/restore)
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/restore-vm"): (
        f"{I}/recovery-points/0000/restore-vm", {"target_vm_name": "authz-vm"}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/instant-restore"): (
        f"{I}/recovery-points/0000/instant-restore", {"target_vm_name": "authz-vm"}),
    ("POST", "/api/v1/subscriptions/{subscription}/instant-restores/{name}/commit"): (f"{S}/instant-restores/authz-vm/commit", None),
    ("POST", "/api/v1/subscriptions/{subscription}/instant-restores/{name}/discard"): (f"{S}/instant-restores/authz-vm/discard", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/replace-disks"): (
        f"{I}/recovery-points/0000/replace-disks", {}),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/cross-region-restore-disks"): (
        f"{I}/recovery-points/0000/cross-region-restore-disks", {"target": "/tmp/haven-authz-crr"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/secondary-recovery-points"): (
        f"{I}/secondary-recovery-points", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/mount"): (
        f"{I}/recovery-points/0000/mount", {}),
    # file recovery straight from the vault (tests/files)
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/volumes"): (
        f"{I}/recovery-points/0000/volumes", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/files"): (
        f"{I}/recovery-points/0000/files?path=/", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/files/download"): (
        f"{I}/recovery-points/0000/files/download?path=/etc", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/files/find"): (f"{I}/files/find?name=x", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/file-downloads"): (f"{V}/file-downloads", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/recovery-points/{point}/unmount"): (
        f"{I}/recovery-points/0000/unmount", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/items/{vm}/mounts"): (f"{I}/mounts", None),
    ("POST", "/api/v1/subscriptions/{subscription}/vaults/import"): (
        f"{S}/vaults/import", {"storage_url": "file:///tmp/haven-authz-import-none"}),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/jobs"): (f"{V}/jobs", None),
    ("GET", "/api/v1/subscriptions/{subscription}/jobs/{job_id}"): (f"{S}/jobs/0000", None),
    ("POST", "/api/v1/subscriptions/{subscription}/jobs/{job_id}/stop"): (f"{S}/jobs/0000/stop", None),
    # key vaults: management needs a role; data-plane routes need Reader (then an access policy, tested in
    # tests/keyvault/test_access_policy.py), so they point at a key vault that does not exist here
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults"): (f"{S}/keyvaults", {"name": "kv-extra", "region": "local"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults"): (f"{S}/keyvaults", None),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (f"{S}/keyvaults/kv-none", None),
    ("PATCH", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (f"{S}/keyvaults/kv-none", {"purge_protection": True}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}"): (f"{S}/keyvaults/kv-none", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/recover"): (f"{S}/keyvaults/kv-none/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/purge"): (f"{S}/keyvaults/kv-none/purge", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/access-policies/{principal}"): (
        f"{S}/keyvaults/kv-none/access-policies/x", {"template": "Haven Backup"}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/access-policies/{principal}"): (
        f"{S}/keyvaults/kv-none/access-policies/x", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys"): (f"{S}/keyvaults/kv-none/keys", {"name": "k"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys"): (f"{S}/keyvaults/kv-none/keys", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/restore"): (f"{S}/keyvaults/kv-none/keys/restore", {"value": "x"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}"): (f"{S}/keyvaults/kv-none/keys/k", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}"): (f"{S}/keyvaults/kv-none/keys/k", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/recover"): (f"{S}/keyvaults/kv-none/keys/k/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/purge"): (f"{S}/keyvaults/kv-none/keys/k/purge", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/backup"): (f"{S}/keyvaults/kv-none/keys/k/backup", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/wrapkey"): (f"{S}/keyvaults/kv-none/keys/k/wrapkey", {"value": "AAAA"}),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/keys/{name}/unwrapkey"): (f"{S}/keyvaults/kv-none/keys/k/unwrapkey", {"value": "AAAA"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets"): (f"{S}/keyvaults/kv-none/secrets", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/restore"): (f"{S}/keyvaults/kv-none/secrets/restore", {"value": "x"}),
    ("PUT", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (f"{S}/keyvaults/kv-none/secrets/s", {"value": "v"}),
    ("GET", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (f"{S}/keyvaults/kv-none/secrets/s", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}"): (f"{S}/keyvaults/kv-none/secrets/s", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/recover"): (f"{S}/keyvaults/kv-none/secrets/s/recover", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/purge"): (f"{S}/keyvaults/kv-none/secrets/s/purge", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/secrets/{name}/backup"): (f"{S}/keyvaults/kv-none/secrets/s/backup", None),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/restore-from-backup"): (
        f"{S}/keyvaults/kv-none/restore-from-backup", {"backup": {"blob": "x"}}),
    ("POST", "/api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/restore-from-recovery-point"): (
        f"{S}/keyvaults/kv-none/restore-from-recovery-point", {"vault": "v1", "vm": "web1", "recovery_point": "0000"}),
    # hosts are shared with subscriptions by a global Owner (tests/foundation/test_tenancy.py)
    ("POST", "/api/v1/hosts/{host}/shares/{subscription}"): ("/api/v1/hosts/no-such-host/shares/prod", None),
    ("DELETE", "/api/v1/hosts/{host}/shares/{subscription}"): ("/api/v1/hosts/no-such-host/shares/prod", None),
    # resource guards (multi-user authorization): management by the guard subscription's roles; requests, decisions
    # and audit answer what the caller may see, approval needs the Guard Approver role (tests/guard)
    ("POST", "/api/v1/subscriptions/{subscription}/resource-guards"): (f"{S}/resource-guards", {"name": "authz-guard"}),
    ("GET", "/api/v1/subscriptions/{subscription}/resource-guards"): (f"{S}/resource-guards", None),
    ("GET", "/api/v1/subscriptions/{subscription}/resource-guards/{guard}"): (f"{S}/resource-guards/g-none", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/resource-guards/{guard}"): (f"{S}/resource-guards/g-none", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/resource-guards/{guard}/approvers/{principal}"): (
        f"{S}/resource-guards/g-none/approvers/x", None),
    ("DELETE", "/api/v1/subscriptions/{subscription}/resource-guards/{guard}/approvers/{principal}"): (
        f"{S}/resource-guards/g-none/approvers/x", None),
    ("GET", "/api/v1/subscriptions/{subscription}/vaults/{vault}/resource-guard"): (f"{V}/resource-guard", None),
    ("PUT", "/api/v1/subscriptions/{subscription}/vaults/{vault}/resource-guard"): (f"{V}/resource-guard", {"guard": "g-none"}),
    ("DELETE", "/api/v1/subscriptions/{subscription}/vaults/{vault}/resource-guard"): (f"{V}/resource-guard", None),
    ("GET", "/api/v1/resource-guard-requests"): ("/api/v1/resource-guard-requests", None),
    ("GET", "/api/v1/resource-guard-requests/{request_id}"): ("/api/v1/resource-guard-requests/0000", None),
    ("POST", "/api/v1/resource-guard-requests/{request_id}/approve"): ("/api/v1/resource-guard-requests/0000/approve", {}),
    ("POST", "/api/v1/resource-guard-requests/{request_id}/reject"): ("/api/v1/resource-guard-requests/0000/reject", {}),
    ("GET", "/api/v1/resource-guard-audit"): ("/api/v1/resource-guard-audit", None),
}


PRINCIPALS = ["none", "revoked", "expired", "reader", "operator", "contributor", "owner", "other-owner", "global-owner",
              "job-agent", "other-job-agent", "other-host-agent"]
AGENTS = {"job-agent": "far1", "other-job-agent": "far2", "other-host-agent": "far3"}
TABLE = read_table("/api/v1", PRINCIPALS)  # (method, path) -> {principal: allowed}



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from datetime import datetime, timezone

    from haven.clock import FakeClock
    from haven.config import load_settings
    from haven.services.core import Haven

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
    register_local_host(core, home / "vms")
    core.protection.enable(root, "prod", "v1", "web1")
    tokens, revoke = user_tokens(core, root)
    revoke()
    client = TestClient(create_app(core), raise_server_exceptions=False)
    for principal, host in AGENTS.items():  # remote hosts, each with one VM its agent reports
        vms = home / f"{host}-vms"
        make_folder_vm(vms, f"{host}-vm")
        tokens[principal] = core.agents.add_host(root, host, "local", f"folder://{vms}", shares=["prod"])["agent_token"]
        hello = {"adapter": f"folder://{vms}", "version": "t", "job_types": ["Backup", "Restore"]}
        assert client.post("/api/v1/agent/hello", json=hello, headers=bearer(tokens[principal])).status_code == 200
        report = {"vms": [{"name": f"{host}-vm", "power_state": "stopped", "disks": []}]}
        assert client.put("/api/v1/agent/vms", json=report, headers=bearer(tokens[principal])).status_code == 200
        core.protection.enable(root, "prod", "v1", f"{host}-vm")
    _queue_and_claim(core, root, client, tokens["other-job-agent"], "far2-vm")  # far2 holds a job of its own
    clock.advance(timedelta(hours=2))  # the "old" token is now expired
    yield client, tokens, core, root
    core.close()


def _queue_and_claim(core, root, client, token: str, vm: str) -> str:
    queued = core.protection.backup_now(root, "prod", "v1", vm)
    r = client.post("/api/v1/agent/jobs/claim", json={"worker": "w", "types": ["Backup"]}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["id"] == queued["id"], r.text
    return queued["id"]


def _wrapped_key(core) -> str:
    import json
    from urllib.parse import urlparse

    from haven.db.models import Vault
    from haven.engine import LocalBackend

    with core.db.session() as s:
        url = s.query(Vault).filter(Vault.name == "v1").one().storage_url
    return json.loads(LocalBackend(urlparse(url).path).load("config"))["key"]["wrapped"]


def test_the_table_lists_every_route_of_the_openapi_document(world):
    client = world[0]
    doc = client.app.openapi()
    routes = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/")}
    assert set(TABLE) == routes, f"not in docs/security.md: {routes - set(TABLE)}; stale there: {set(TABLE) - routes}"
    assert set(REQUESTS) == routes, f"no request for: {routes - set(REQUESTS)}; stale: {set(REQUESTS) - routes}"


@pytest.mark.parametrize("route", sorted(REQUESTS), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_authorization(world, route):
    client, tokens, core, root = world
    method = route[0]
    path, body = REQUESTS[route]
    job = None
    if "{job}" in path:  # a fresh job of far1, claimed by its agent as worker "w"
        job = _queue_and_claim(core, root, client, tokens["job-agent"], "far1-vm")
        path = path.format(job=job)
    if body and body.get("wrapped") == "{wrapped}":  # the data key as wrapped in v1's config: what an agent unwraps
        body = {**body, "wrapped": _wrapped_key(core)}
    expected = TABLE[route]
    try:
        # denied principals first, so that an allowed call that changes state cannot hide a denial
        for principal in sorted(PRINCIPALS, key=lambda p: expected[p]):
            r = client.request(method, path, json=body, headers=bearer(tokens[principal]))
            if principal in ("none", "revoked", "expired"):
                assert r.status_code == 401, (principal, r.status_code, r.text)
                assert r.json()["error"]["code"] in ("UserErrorTokenInvalid", "UserErrorTokenExpired")
            elif expected[principal]:
                assert r.status_code not in (401, 403), (principal, r.status_code, r.text)
            else:
                assert r.status_code in (403, 404), (principal, r.status_code, r.text)
                if r.status_code == 404:  # only a subscription the caller cannot see may be hidden
                    assert principal in ("other-owner", *AGENTS) and r.json()["error"]["code"] == "UserErrorSubscriptionNotFound", r.text
    finally:
        if job is not None:  # end the job, whatever the calls did to it, so the next route can queue one
            client.post(f"/api/v1/agent/jobs/{job}/fail", json={"worker": "w", "error": {"code": "X", "message": "m"}},
                        headers=bearer(tokens["job-agent"]))

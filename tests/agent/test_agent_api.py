"""The agent API: a remote host agent reaches only its own host's VMs and jobs, and nothing it
reports is recorded unless it holds the job's lease and the data is really in the vault."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.db.models import Host, Job, RecoveryPoint


@pytest.fixture
def client(core):
    with TestClient(create_app(core), raise_server_exceptions=False) as c:
        yield c


def _as(token):
    return {"Authorization": f"Bearer {token}"}


def _hello(client, token):
    r = client.post("/api/v1/agent/hello", json={"adapter": "folder:///x", "version": "t", "job_types": ["Backup", "Restore"]}, headers=_as(token))
    assert r.status_code == 200, r.text
    return r.json()


def _claimed_far_backup(client, world, core) -> dict:
    """The remote agent says hello, reports far-vm, and claims (as worker w1) the backup queued for it."""
    _hello(client, world["agent_token"])
    client.put("/api/v1/agent/vms", json={"vms": [{"name": "far-vm", "power_state": "stopped", "disks": []}]}, headers=_as(world["agent_token"]))
    core.protection.enable(world["root"], "prod", "v1", "far-vm")
    core.protection.backup_now(world["root"], "prod", "v1", "far-vm")
    return client.post("/api/v1/agent/jobs/claim", json={"worker": "w1", "types": ["Backup"]}, headers=_as(world["agent_token"])).json()


def test_adding_a_host_needs_a_global_owner_and_gives_a_credential_once(client, world, core):
    reader = core.auth.create_token(world["root"], "r", "Reader")["token"]
    r = client.post("/api/v1/hosts", json={"name": "h2", "region": "local"}, headers=_as(reader))
    assert r.status_code == 403
    owner = core.auth.create_token(world["root"], "o", "Owner")["token"]
    r = client.post("/api/v1/hosts", json={"name": "h2", "region": "local"}, headers=_as(owner))
    assert r.status_code == 201 and r.json()["agent_token"].startswith("hvn_") and r.json()["agent"] == "remote"
    again = client.post("/api/v1/hosts", json={"name": "h2", "region": "local"}, headers=_as(owner))
    assert again.status_code == 409 and again.json()["error"]["code"] == "UserErrorHostExists"


def test_users_cannot_use_the_agent_api(client, world, core):
    owner = core.auth.create_token(world["root"], "o", "Owner")["token"]
    r = client.post("/api/v1/agent/hello", json={"adapter": "folder:///x", "version": "t", "job_types": []}, headers=_as(owner))
    assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorNotAnAgent"


def test_hello_records_what_the_agent_runs_and_vms_land_on_its_host_only(client, world, core):
    info = _hello(client, world["agent_token"])
    assert info["name"] == "far" and info["job_types"] == ["Backup", "Restore"] and info["lease_seconds"] == 5.0
    minimum = core.settings.min_guest_agent_version  # the one minimum: the agent applies the server's
    assert info["min_guest_agent_version"] == minimum
    r = client.put("/api/v1/agent/vms", json={"vms": [{"name": "far-vm", "power_state": "stopped", "disks": []}]}, headers=_as(world["agent_token"]))
    assert r.status_code == 200 and r.json() == {"reported": 1, "min_guest_agent_version": minimum}
    vms = {v["name"]: v["host"] for v in core.inventory.list_vms(world["root"])}
    assert vms == {"near": "host1", "far-vm": "far"}


def test_an_agent_claims_only_its_own_hosts_jobs(client, world, core):
    _hello(client, world["agent_token"])
    client.put("/api/v1/agent/vms", json={"vms": [{"name": "far-vm", "power_state": "stopped",
                                                   "disks": [{"name": "vda", "size": 8 << 20, "format": "raw"}]}]}, headers=_as(world["agent_token"]))
    core.protection.enable(world["root"], "prod", "v1", "near")
    core.protection.enable(world["root"], "prod", "v1", "far-vm")
    near = core.protection.backup_now(world["root"], "prod", "v1", "near")
    far = core.protection.backup_now(world["root"], "prod", "v1", "far-vm")
    r = client.post("/api/v1/agent/jobs/claim", json={"worker": "w1", "types": ["Backup", "Restore"]}, headers=_as(world["agent_token"]))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"] == far["id"] and job["plan"]["vm"] == "far-vm" and job["storage"]["kind"] == "endpoint"
    # nothing else for this host: the server's own host's backup is not handed out
    r = client.post("/api/v1/agent/jobs/claim", json={"worker": "w1", "types": ["Backup"]}, headers=_as(world["agent_token"]))
    assert r.status_code == 204
    # the other host's job is out of reach for every agent call
    for path, body in (("heartbeat", {}), ("progress", {"subtasks": []}), ("unwrap", {"wrapped": "AAAAAAAA"}),
                       ("complete", {"outcome": {}}), ("fail", {"error": {"code": "X", "message": "m"}})):
        r = client.post(f"/api/v1/agent/jobs/{near['id']}/{path}", json={"worker": "w1", **body}, headers=_as(world["agent_token"]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorAgentScopeViolation", (path, r.text)
    with core.db.session() as s:
        assert s.get(Job, near["id"]).status == "Queued"


def test_only_the_lease_holder_may_unwrap_or_complete(client, world, core):
    job = _claimed_far_backup(client, world, core)
    with core.db.session() as s:
        from haven.db.models import Vault

        vault = s.query(Vault).one()
    wrapped = core.storage.open(vault).config["key"]["wrapped"]
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w2", "wrapped": wrapped}, headers=_as(world["agent_token"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "JobLeaseExpired"
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": wrapped}, headers=_as(world["agent_token"]))
    assert r.status_code == 200 and len(base64.b64decode(r.json()["key"])) == 32
    for path, body in (("complete", {"outcome": {}}), ("fail", {"error": {"code": "X", "message": "m"}})):
        r = client.post(f"/api/v1/agent/jobs/{job['id']}/{path}", json={"worker": "w2", **body}, headers=_as(world["agent_token"]))
        assert r.status_code == 409 and r.json()["error"]["code"] == "JobLeaseExpired", (path, r.text)
    with core.db.session() as s:
        assert s.get(Job, job["id"]).status == "InProgress"


def test_a_reported_point_whose_manifest_is_not_stored_is_never_recorded(client, world, core):
    job = _claimed_far_backup(client, world, core)
    outcome = {"consistency": "crash", "disks": [{"name": "vda", "size": 1, "format": "raw"}], "bytes_read": 1,
               "bytes_new": 1, "checkpoint": None, "warned": False, "extension": None}
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/complete", json={"worker": "w1", "outcome": outcome}, headers=_as(world["agent_token"]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "UserErrorPointNotStored"
    with core.db.session() as s:
        assert s.query(RecoveryPoint).count() == 0
        assert s.get(Job, job["id"]).status == "InProgress"  # the agent may still fail it; the reaper settles it otherwise


def test_jobs_a_hosts_agent_does_not_run_are_refused_up_front(client, world, core):
    from haven.services.agents import HostCannotRun

    def check(job_type, secondary=False):
        with core.db.session() as s:
            core.agents.require_runs(s.get(Host, world["far_id"]), job_type, job_type, secondary=secondary)

    with pytest.raises(HostCannotRun) as e:  # before its agent said hello, the host runs nothing
        check("RestoreVm")
    assert "restore-disks --host far" in e.value.fix
    _hello(client, world["agent_token"])
    check("Backup")
    check("Restore")
    with pytest.raises(HostCannotRun):  # the hello above did not offer restore-vm
        check("RestoreVm")
    with pytest.raises(HostCannotRun):
        check("ReplaceDisks")
    with pytest.raises(HostCannotRun) as e:
        check("Restore", secondary=True)
    assert "cross-region" in e.value.text


def test_prepare_check_shows_what_a_remote_agent_probed_not_the_servers_path(client, world, core):
    _hello(client, world["agent_token"])
    client.put("/api/v1/agent/vms", json={"vms": [{"name": "far-vm", "power_state": "stopped", "disks": []}]}, headers=_as(world["agent_token"]))
    targets = client.get("/api/v1/agent/storage-targets", headers=_as(world["agent_token"])).json()
    assert [(t["vault"], t["storage"]["kind"]) for t in targets] == [("v1", "endpoint")]
    vault_id = targets[0]["vault_id"]

    def connectivity():
        report = core.prepare.check(world["root"], "prod", "far-vm", timeout=2)
        return {c["check"]: c for c in report["checks"]}

    assert connectivity()["storage-connectivity"]["status"] == "warn"  # nothing reported yet: not the server's own path
    refused = {"storage_url": "haven+http://srv/x", "endpoint": "srv:8733", "proxy": "http://proxy:3128", "ok": False, "steps": [],
               "failed": {"step": "proxy", "status": "fail", "reason": "the proxy answered 407", "fix": "check the credentials",
                          "code": "UserErrorProxyAuthenticationRequired"}}
    r = client.put("/api/v1/agent/network", json={"config": {"proxy": "http://proxy:3128", "proxy_source": "agent.conf"},
                                                  "vaults": {vault_id: refused}}, headers=_as(world["agent_token"]))
    assert r.status_code == 204
    checks = connectivity()
    assert checks["storage-connectivity"]["status"] == "fail" and checks["storage-connectivity"]["code"] == "UserErrorProxyAuthenticationRequired"
    assert "host 'far'" in checks["storage-connectivity"]["reason"] and "proxy:3128" in checks["agent-proxy"]["reason"]
    reached = {"storage_url": "haven+http://srv/x", "endpoint": "srv:8733", "proxy": None, "ok": True, "failed": None,
               "steps": [{"step": "tcp", "status": "pass", "reason": "connected"}]}
    client.put("/api/v1/agent/network", json={"config": {}, "vaults": {vault_id: reached}}, headers=_as(world["agent_token"]))
    checks = connectivity()
    assert checks["storage-connectivity"]["status"] == "pass" and "agent of host 'far' reached" in checks["storage-connectivity"]["reason"]


def test_rotating_an_agent_credential_stops_the_old_one(client, world, core):
    owner = core.auth.create_token(world["root"], "o", "Owner")["token"]
    reader = core.auth.create_token(world["root"], "r", "Reader")["token"]
    assert client.post("/api/v1/hosts/far/agent-token", headers=_as(reader)).status_code == 403
    r = client.post("/api/v1/hosts/far/agent-token", headers=_as(owner))
    assert r.status_code == 200 and r.json()["name"] == "far"
    fresh = r.json()["agent_token"]
    old = client.post("/api/v1/agent/hello", json={"adapter": "folder:///x", "version": "t", "job_types": []}, headers=_as(world["agent_token"]))
    assert old.status_code == 401
    _hello(client, fresh)
    missing = client.post("/api/v1/hosts/nowhere/agent-token", headers=_as(owner))
    assert missing.status_code == 404

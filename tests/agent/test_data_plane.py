"""The storage endpoint by capability, tried the way an attacker would: every user role, a host
agent's own token, a job's capability used beyond its job, another subscription's vault, the key
unwrap route as an oracle; and a first-format vault migrated to bound keys, still restorable."""

from __future__ import annotations

import base64
import filecmp
import json
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.db.models import Job, Vault
from haven.engine import LocalBackend
from haven.engine.repository import unwrap_config_key
from tests.agent.test_agent_api import _claimed_far_backup
from tests.foundation.helpers import run_job

OBJ = "/storage/v1/vaults/{vault}/objects"


@pytest.fixture
def client(core):
    with TestClient(create_app(core), raise_server_exceptions=False) as c:
        yield c


def _as(token):
    return {"Authorization": f"Bearer {token}"}


def _vault(core, name="v1") -> Vault:
    with core.db.session() as s:
        return s.query(Vault).filter(Vault.name == name).one()


def _storage(core, name="v1") -> LocalBackend:
    """The vault's folder, read the way its owner's disk would be (not through Haven)."""
    return LocalBackend(urlparse(_vault(core, name).storage_url).path)


def _back_up_near(core, world) -> tuple[str, str]:
    """A real backup of the server's own VM 'near' into v1; returns its (item, point) in storage."""
    core.protection.enable(world["root"], "prod", "v1", "near")
    job = core.protection.backup_now(world["root"], "prod", "v1", "near")
    run_job(core, job["id"])
    assert core.jobs.show(world["root"], "prod", job["id"])["status"].startswith("Completed")
    (point,) = core.storage.open(_vault(core)).point_ids()
    return point


def _restores_byte_for_byte(core, home, item, point, tmp_path) -> None:
    target = tmp_path / "restored.raw"
    core.storage.open(_vault(core)).restore_disk(item, point, "vda", str(target))
    assert filecmp.cmp(target, home / "vms" / "near" / "vda.raw", shallow=False)


def _lock(core, kind="backup", ahead=timedelta(minutes=30), expires=None) -> bytes:
    when = expires or (core.clock.now() + ahead).isoformat()
    return json.dumps({"kind": kind, "holder": "x", "time": core.clock.now().isoformat(), "expires": when}).encode()


def test_no_user_role_reaches_raw_objects_of_a_locked_vault(client, world, core, home, owner_token, tmp_path):
    item, point = _back_up_near(core, world)
    core.vaults.set_properties(world["root"], "prod", "v1", immutability="Enabled")
    core.vaults.set_properties(world["root"], "prod", "v1", immutability="Locked")
    vault_id = _vault(core).id
    config = _storage(core).load("config")
    tokens = {role: core.auth.create_token(world["root"], role.lower(), role, "prod")["token"]
              for role in ("Reader", "Operator", "Contributor", "Owner")}
    tokens["global Owner"] = owner_token
    base = OBJ.format(vault=vault_id)
    for who, token in tokens.items():
        for method, path, body in (("DELETE", f"{base}/points/{item}/{point}", None), ("DELETE", f"{base}/config", None),
                                   ("PUT", f"{base}/locks/evil", _lock(core, "gc", expires="2099-01-01T00:00:00+00:00")),
                                   ("PUT", f"{base}/config", b"{}"), ("GET", f"{base}/config", None), ("GET", base, None),
                                   ("POST", f"/storage/v1/vaults/{vault_id}/prepare", None)):
            r = client.request(method, path, content=body, headers=_as(token))
            assert r.status_code == 403, (who, method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "UserErrorStorageEndpointUsersRefused", (who, method, path)
    storage = _storage(core)
    assert storage.load("config") == config and not list(storage.list("locks/"))
    assert core.storage.open(_vault(core)).point_ids() == [(item, point)]
    _restores_byte_for_byte(core, home, item, point, tmp_path)
    assert [p["state"] for p in core.points.list(world["root"], "prod", "v1", "near")] == ["Available"]


def test_a_hosts_own_token_opens_no_vault(client, world, core):
    core.subscriptions.create(world["root"], "dev")
    core.vaults.create(world["root"], "dev", "v2", "local")  # same region as the agent's host
    for name in ("v1", "v2"):
        base = OBJ.format(vault=_vault(core, name).id)
        for method, path in (("GET", f"{base}/config"), ("GET", base), ("DELETE", f"{base}/config")):
            r = client.request(method, path, headers=_as(world["agent_token"]))
            assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorStorageCapabilityRequired", (name, method, r.text)
    assert _storage(core, "v2").exists("config") and _storage(core, "v1").exists("config")


def test_a_jobs_capability_creates_only_in_its_own_vault(client, world, core, home, tmp_path):
    item, point = _back_up_near(core, world)
    core.subscriptions.create(world["root"], "dev")
    core.vaults.create(world["root"], "dev", "v2", "local")
    job = _claimed_far_backup(client, world, core)
    cap, plan = job["storage"]["capability"], job["plan"]
    assert job["storage"]["kind"] == "endpoint" and cap.startswith("hvcap1.") and world["agent_token"] not in cap
    base = OBJ.format(vault=_vault(core).id)
    storage = _storage(core)
    config = storage.load("config")
    chunk = next(o.name for o in storage.list("chunks/"))
    chunk_bytes = storage.load(chunk)

    def call(method, name, body=None, status=None, code=None):
        r = client.request(method, f"{base}/{name}" if name else base, content=body, headers=_as(cap))
        assert status is None or r.status_code == status, (method, name, r.status_code, r.text)
        assert code is None or r.json()["error"]["code"] == code, (method, name, r.text)
        return r

    denied = "UserErrorStorageCapabilityDenied"
    # read what a backup reads
    assert call("GET", "config", status=200).content == config
    assert call("HEAD", chunk).status_code == 200
    assert {o["name"] for o in call("GET", None).json()["objects"]} >= {"config", chunk}
    # never delete or overwrite stored data, config, meta/, gc/; never another item's or job's point
    for name in ("config", f"points/{item}/{point}", chunk, "meta/vault"):
        call("DELETE", name, status=403, code=denied)
    for name in ("config", "meta/vault", "gc/pending", "quarantine/x", f"points/{item}/{point}", f"points/{item}/new-point",
                 f"points/{plan['item_id']}/another-point"):
        call("PUT", name, b"x", status=403, code=denied)
    call("PUT", chunk, b"garbage", status=204)  # an existing chunk: success, not replaced
    assert storage.load(chunk) == chunk_bytes
    assert client.post(f"/storage/v1/vaults/{_vault(core).id}/prepare", headers=_as(cap)).status_code == 403
    # locks: never a GC lock, never one expiring in 2099; its own, bounded, refreshed and removed
    call("PUT", "locks/evil", _lock(core, "gc"), status=403, code=denied)
    call("PUT", "locks/evil", _lock(core, expires="2099-01-01T00:00:00+00:00"), status=403, code=denied)
    call("PUT", "locks/mine", _lock(core), status=204)
    assert json.loads(storage.load("locks/mine"))["job"] == job["id"]
    call("PUT", "locks/mine", _lock(core, ahead=timedelta(minutes=45)), status=204)
    r = client.put(f"{base}/locks/big", content=iter([b"{" + b" " * (3 << 20) + b"}"]), headers=_as(cap))  # chunked, over the cap
    assert r.status_code == 413 and r.json()["error"]["code"] == "UserErrorStorageObjectTooLarge"
    call("DELETE", "locks/mine", status=204)
    assert not storage.exists("locks/evil") and not storage.exists("locks/big") and not storage.exists("locks/mine")
    # listing stays inside the vault
    for prefix in ("../", "/etc/ss"):
        r = client.get(base, params={"prefix": prefix}, headers=_as(cap))
        assert r.status_code == 400 and r.json()["error"]["code"] == "UserErrorInvalidObjectName" and "objects" not in r.json()
    # its own point: created once
    name = f"points/{plan['item_id']}/{plan['point_id']}"
    call("PUT", name, b"manifest", status=204)
    call("PUT", name, b"manifest", status=204)
    call("PUT", name, b"another manifest", status=403, code=denied)
    # another subscription's vault
    other = OBJ.format(vault=_vault(core, "v2").id)
    for method in ("GET", "DELETE"):
        r = client.request(method, f"{other}/config", headers=_as(cap))
        assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorStorageCapabilityOtherVault"
    assert _storage(core, "v2").exists("config")
    # a forged capability
    forged = cap[:-4] + ("0000" if not cap.endswith("0000") else "1111")
    assert client.get(f"{base}/config", headers=_as(forged)).status_code == 401
    # the job ends: so does its capability
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/fail", json={"worker": "w1", "error": {"code": "X", "message": "m"}},
                    headers=_as(world["agent_token"]))
    assert r.status_code == 204
    call("GET", "config", status=401, code="UserErrorStorageCapabilityExpired")
    assert storage.load("config") == config
    _restores_byte_for_byte(core, home, item, point, tmp_path)


def test_the_probe_capability_only_asks_whether_config_exists(client, world, core):
    targets = client.get("/api/v1/agent/storage-targets", headers=_as(world["agent_token"])).json()
    cap = targets[0]["storage"]["capability"]
    base = OBJ.format(vault=targets[0]["vault_id"])
    assert client.head(f"{base}/config", headers=_as(cap)).status_code == 200
    for method, path in (("GET", f"{base}/config"), ("GET", base), ("HEAD", f"{base}/meta/vault"), ("DELETE", f"{base}/config")):
        r = client.request(method, path, headers=_as(cap))
        assert r.status_code == 403, (method, path)
        assert method == "HEAD" or r.json()["error"]["code"] == "UserErrorStorageCapabilityDenied", (method, path)


def test_the_unwrap_route_serves_only_the_jobs_own_vault_key(client, world, core):
    core.subscriptions.create(world["root"], "dev")
    core.vaults.create(world["root"], "dev", "v2", "local")  # keyed by the same master key as v1
    job = _claimed_far_backup(client, world, core)
    theirs = json.loads(_storage(core, "v2").load("config"))["key"]["wrapped"]
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": theirs}, headers=_as(world["agent_token"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorUnwrapNotOwnVault", r.text
    assert "v2" not in r.text and "dev" not in r.text
    for junk in ("AAAAAAAA", "not base64!"):
        r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": junk}, headers=_as(world["agent_token"]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorUnwrapNotOwnVault"
    mine = json.loads(_storage(core).load("config"))["key"]["wrapped"]
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": mine}, headers=_as(world["agent_token"]))
    assert r.status_code == 200
    config = json.loads(_storage(core).load("config"))
    assert base64.b64decode(r.json()["key"]) == unwrap_config_key(core.storage.kek(), config)


def _downgrade_to_first_format(core) -> str:
    """Rewrite v1's config as Haven wrote it before keys were bound: the bare data key, wrapped."""
    storage = _storage(core)
    config = json.loads(storage.load("config"))
    kek = core.storage.kek()
    data_key = unwrap_config_key(kek, config)
    config["key"] = {"kek_id": kek.key_id, "wrapped": base64.b64encode(kek.wrap(data_key)).decode()}
    storage.store("config", json.dumps(config, indent=1).encode())
    return config["key"]["wrapped"]


def test_a_first_format_vault_is_migrated_and_restores_byte_for_byte(client, world, core, home, tmp_path):
    item, point = _back_up_near(core, world)
    old = _downgrade_to_first_format(core)
    assert "format" not in json.loads(_storage(core).load("config"))["key"]
    _restores_byte_for_byte(core, home, item, point, tmp_path)  # the server's first open migrates it
    key = json.loads(_storage(core).load("config"))["key"]
    assert key["format"] == 2 and key["version"] == 1 and key["wrapped"] != old
    # an agent's job on the migrated vault gets its key; the old, unbound blob is no longer served
    job = _claimed_far_backup(client, world, core)
    for wrapped, status in ((old, 403), (key["wrapped"], 200)):
        r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": wrapped}, headers=_as(world["agent_token"]))
        assert r.status_code == status, r.text
    with core.db.session() as s:
        assert s.get(Job, job["id"]).status == "InProgress"


def test_a_first_format_vault_is_migrated_when_a_remote_job_is_handed_out(client, world, core):
    _downgrade_to_first_format(core)
    job = _claimed_far_backup(client, world, core)
    assert json.loads(_storage(core).load("config"))["key"]["format"] == 2
    wrapped = json.loads(_storage(core).load("config"))["key"]["wrapped"]
    r = client.post(f"/api/v1/agent/jobs/{job['id']}/unwrap", json={"worker": "w1", "wrapped": wrapped}, headers=_as(world["agent_token"]))
    assert r.status_code == 200 and len(base64.b64decode(r.json()["key"])) == 32

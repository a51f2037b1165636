"""Every route of the storage endpoint (``/storage/v1``) against fourteen principals, cell for cell as the
table "/storage/v1" of ``docs/security.md`` states.

The vault ``v1`` (subscription ``prod``) holds one real recovery point. Its principals: every user role
(refused: users get no raw object access), the capability of a backup job of ``v1`` claimed by host
``far1``'s agent (``job-agent``), of a restore job of ``v1`` (``restore-agent``), the connectivity probe's
capability for ``v1`` (``probe``), the capability of a backup job of another subscription's vault ``v2``
(``other-job-agent``), and a host agent's own token (``other-host-agent``). An allowed call never answers
401 or 403; a refused one answers 401 (no valid credential) or 403 and leaves the vault's objects as they
were.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.db.models import Vault
from haven.engine import LocalBackend
from tests.foundation.helpers import make_folder_vm, register_local_host, run_job
from tests.security.principals import bearer, user_tokens
from tests.security.table import read_table

PRINCIPALS = ["none", "revoked", "expired", "reader", "operator", "contributor", "owner", "other-owner", "global-owner",
              "job-agent", "restore-agent", "probe", "other-job-agent", "other-host-agent"]
TABLE = read_table("/storage/v1", PRINCIPALS)
FOREIGN_LOCK_JOB = "a-job-of-another-agent"



def _vault(core, name: str) -> Vault:
    with core.db.session() as s:
        return s.query(Vault).filter(Vault.name == name).one()


def _claim(client, token: str, worker: str, types: list[str], expect: str) -> dict:
    r = client.post("/api/v1/agent/jobs/claim", json={"worker": worker, "types": types}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["id"] == expect, r.text
    return r.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from haven.clock import FakeClock
    from haven.config import load_settings
    from haven.services.core import Haven

    home = tmp_path_factory.mktemp("storage-authz")
    (home / "vms").mkdir()
    clock = FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))
    core = Haven(load_settings(home, database_url=f"sqlite:///{home / 'h.db'}"), clock=clock)
    root = core.auth.authenticate(core.auth.bootstrap_local_owner(home / "cred.json", "x"))
    for sub, vault in (("prod", "v1"), ("dev", "v2")):
        core.subscriptions.create(root, sub)
        core.vaults.create(root, sub, vault, "local")
    make_folder_vm(home / "vms", "web1")
    register_local_host(core, home / "vms")
    core.protection.enable(root, "prod", "v1", "web1")
    backup = core.protection.backup_now(root, "prod", "v1", "web1")
    run_job(core, backup["id"])
    (point,) = core.points.list(root, "prod", "v1", "web1")

    tokens, revoke = user_tokens(core, root)
    revoke()
    clock.advance(timedelta(hours=2))  # the "old" token is now expired; everything below is fresh

    client = TestClient(create_app(core), raise_server_exceptions=False)
    hosts = {}
    for host, sub, vault in (("far1", "prod", "v1"), ("far2", "dev", "v2"), ("far3", "prod", None)):
        vms = home / f"{host}-vms"
        make_folder_vm(vms, f"{host}-vm")
        hosts[host] = core.agents.add_host(root, host, "local", f"folder://{vms}", shares=[sub])["agent_token"]
        hello = {"adapter": f"folder://{vms}", "version": "t", "job_types": ["Backup", "Restore"]}
        assert client.post("/api/v1/agent/hello", json=hello, headers=bearer(hosts[host])).status_code == 200
        report = {"vms": [{"name": f"{host}-vm", "power_state": "stopped", "disks": []}]}
        assert client.put("/api/v1/agent/vms", json=report, headers=bearer(hosts[host])).status_code == 200
        if vault:
            core.protection.enable(root, sub, vault, f"{host}-vm")
    queued = core.protection.backup_now(root, "prod", "v1", "far1-vm")
    own = _claim(client, hosts["far1"], "w1", ["Backup"], queued["id"])
    tokens["job-agent"] = own["storage"]["capability"]
    restore = core.points.restore_disks(root, "prod", "v1", "web1", point["id"], str(home / "restored"), host="far1")
    tokens["restore-agent"] = _claim(client, hosts["far1"], "w2", ["Restore"], restore["id"])["storage"]["capability"]
    targets = client.get("/api/v1/agent/storage-targets", headers=bearer(hosts["far1"])).json()
    tokens["probe"] = next(t["storage"]["capability"] for t in targets if t["vault"] == "v1")
    other = core.protection.backup_now(root, "dev", "v2", "far2-vm")
    tokens["other-job-agent"] = _claim(client, hosts["far2"], "w1", ["Backup"], other["id"])["storage"]["capability"]
    tokens["other-host-agent"] = hosts["far3"]

    storage = LocalBackend(urlparse(_vault(core, "v1").storage_url).path)
    chunk = next(o.name for o in storage.list("chunks/"))
    names = {
        "{vault}": _vault(core, "v1").id,
        "{item}": point["item_id"] if "item_id" in point else next(o.name for o in storage.list("points/")).split("/")[1],
        "{point}": point["id"],
        "{chunk}": chunk,
        "{new-chunk}": "chunks/ab/" + "ab" * 32,
        "{own-point}": f"{own['plan']['item_id']}/{own['plan']['point_id']}",
        "{other-point}": f"{own['plan']['item_id']}/not-this-jobs-point",
    }
    yield {"client": client, "tokens": tokens, "core": core, "storage": storage, "names": names, "own": own,
           "hosts": hosts, "clock": clock}
    core.close()


def _lock(clock, kind: str = "backup", ahead: timedelta = timedelta(minutes=20)) -> bytes:
    now = clock.now()
    return json.dumps({"kind": kind, "holder": "authz", "time": now.isoformat(), "expires": (now + ahead).isoformat()}).encode()


def _request(world, principal: str, method: str, route: str) -> tuple[str, bytes | None]:
    """The concrete path and body of a table row (``route`` relative to ``/storage/v1``)."""
    path = route
    for key, value in world["names"].items():
        path = path.replace(key, value)
    body = None
    if method == "PUT":
        if "/locks/" in path:
            body = _lock(world["clock"], "gc" if path.endswith("/gc-lock") else "backup")
        elif path.endswith("/config") or "/meta/" in path or "/gc/" in path:
            body = b"{}"
        else:
            body = b"not a sealed object, refused or stored as is"
    if "/locks/own-" in path:  # each principal works on a lock of its own name
        path = path.replace("/locks/own-", f"/locks/own-{principal}-")
    return "/storage/v1" + path, body


def test_the_table_covers_every_route_of_the_storage_endpoint():
    from haven.api.storage_endpoint import storage_router

    routes = storage_router(lambda token, vault: None).routes  # the endpoint's own router, as the app mounts it
    assert len(routes) >= 6
    for route in routes:
        template = route.path
        shape = re.compile("^" + re.sub(r"\\\{[a-z_]+:path\\\}", ".+", re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))) + "$")
        for method in route.methods:
            assert any(m == method and shape.match(r) for m, r in TABLE), f"docs/security.md has no /storage/v1 row for {method} {template}"


@pytest.mark.parametrize("row", sorted(TABLE), ids=lambda r: f"{r[0]} {r[1][len('/storage/v1'):]}")
def test_storage_route_authorization(world, row):
    client, tokens, storage = world["client"], world["tokens"], world["storage"]
    method, full = row
    route = full[len("/storage/v1"):]
    expected = TABLE[row]
    if "/locks/foreign" in route:  # a lock another job's agent wrote (stamped with that job by the endpoint)
        storage.store("locks/foreign", json.dumps({"kind": "backup", "holder": "x", "job": FOREIGN_LOCK_JOB,
                                                   "expires": (world["clock"].now() + timedelta(minutes=20)).isoformat()}).encode())
    for principal in sorted(PRINCIPALS, key=lambda p: expected[p]):
        path, body = _request(world, principal, method, route)
        if "/locks/own-" in path and method == "DELETE":  # a lock must exist to be deleted: its owner writes it first
            client.put(path, content=_lock(world["clock"]), headers=bearer(tokens[principal]))
        before = {o.name: o.size for o in storage.list("")}
        r = client.request(method, path, content=body, headers=bearer(tokens[principal]))
        if principal in ("none", "revoked", "expired"):
            assert r.status_code == 401, (principal, r.status_code, r.text)
        elif expected[principal]:
            assert r.status_code not in (401, 403), (principal, method, path, r.status_code, r.text)
        else:
            assert r.status_code in (401, 403), (principal, method, path, r.status_code, r.text)
            after = {o.name: o.size for o in storage.list("")}
            assert after == before, f"{principal} {method} {path} was refused but changed {set(after) ^ set(before)}"

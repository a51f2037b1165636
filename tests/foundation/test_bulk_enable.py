"""Protecting many VMs in one call: `enable-for-vm --vm a --vm b …` and `POST …/items {"vms": [...]}`."""

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from haven.cli.main import app
from tests.foundation.helpers import make_folder_vm, register_local_host
from tests.services.haven_server import HavenServer

ITEMS = "/api/v1/subscriptions/prod/vaults/v1/items"


def cli(server, *args, expect=0):
    result = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, "-o", "json", *args])
    assert result.exit_code == expect, (args, result.exit_code, result.output)
    return result


@pytest.fixture
def server(tmp_path, db_url):
    home = tmp_path / "srv"
    for name in ("web1", "web2", "web3"):
        make_folder_vm(home / "vms", name, size=1 << 20)
    srv = HavenServer(home, database_url=db_url).start()
    yield srv
    srv.stop()


def test_enable_for_vm_protects_several_vms_in_one_call_and_reports_each(server):
    V = ["-s", "prod", "-v", "v1"]
    cli(server, "subscription", "create", "--name", "prod")
    cli(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    cli(server, "protection", "enable-for-vm", *V, "--vm", "web1")  # one VM: the old form and answer
    answer = json.loads(cli(server, "protection", "enable-for-vm", *V, "--vm", "web2", "--vm", "web3").stdout)
    assert answer["protected"] == 2 and answer["failed"] == 0
    assert [(r["vm"], r["status"], r["item"]["protection_state"]) for r in answer["results"]] == [
        ("web2", "Protected", "Protected"), ("web3", "Protected", "Protected")]
    # one VM already protected, one unknown: each gets its own typed error, the rest still happen; exit code 1
    make_bad = cli(server, "protection", "enable-for-vm", *V, "--vm", "web1", "--vm", "ghost", expect=1)
    results = json.loads(make_bad.stdout)["results"]
    assert [(r["vm"], r["status"], r["error"]["code"]) for r in results] == [
        ("web1", "Failed", "UserErrorVmAlreadyProtected"), ("ghost", "Failed", "UserErrorVmNotInInventory")]
    assert all(r["error"]["recommendation"] for r in results)
    items = json.loads(cli(server, "item", "list", *V).stdout)
    assert sorted(i["vm"] for i in items) == ["web1", "web2", "web3"]


def test_the_api_accepts_vms_besides_vm_and_checks_the_body(core, home, owner_token):
    from haven.api.app import create_app

    for name in ("a1", "a2"):
        make_folder_vm(home / "vms", name, size=1 << 20)
    with TestClient(create_app(core), raise_server_exceptions=False) as api:
        api.headers["Authorization"] = f"Bearer {owner_token}"
        assert api.post("/api/v1/subscriptions", json={"name": "prod"}).status_code in (200, 201)
        assert api.post("/api/v1/subscriptions/prod/vaults", json={"name": "v1", "region": "local"}).status_code in (200, 201)
        register_local_host(core, home / "vms")
        for body in ({}, {"vm": "a1", "vms": ["a2"]}, {"vms": []}, {"vms": ["a1", "a1"]}):
            bad = api.post(ITEMS, json=body)
            assert bad.status_code == 422 and bad.json()["error"]["code"], (body, bad.text)
        assert api.get(ITEMS).json() == []  # nothing written
        missing_policy = api.post(ITEMS, json={"vms": ["a1", "a2"], "policy": "nope"})
        assert missing_policy.status_code == 404 and api.get(ITEMS).json() == []
        many = api.post(ITEMS, json={"vms": ["a1", "a2", "zz"]})
        assert many.status_code == 200, many.text
        assert [(r["vm"], r["status"]) for r in many.json()["results"]] == [("a1", "Protected"), ("a2", "Protected"), ("zz", "Failed")]
        assert sorted(i["vm"] for i in api.get(ITEMS).json()) == ["a1", "a2"]
        single = api.post(ITEMS, json={"vm": "a1"})
        assert single.status_code == 409 and single.json()["error"]["code"] == "UserErrorVmAlreadyProtected"

"""A vault under a resource guard that lives in another subscription, and the principals around it.

- ``alice``: Owner of ``prod`` (the backup administrator), Reader on ``sec``, and one of the guard's approvers;
- ``bob``: Contributor on ``prod``, no approver;
- ``sam``: Owner of ``sec`` (the security administrator), approver;
- ``sue``: Reader on ``sec``, approver;
- ``olga``: Owner of the unrelated subscription ``other``.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from tests.foundation.helpers import make_folder_vm, register_local_host, run_job

API = "/api/v1"
V1 = f"{API}/subscriptions/prod/vaults/v1"
V2 = f"{API}/subscriptions/prod/vaults/v2"
GUARDS = f"{API}/subscriptions/sec/resource-guards"


class GuardWorld:
    def __init__(self, core, home, clock):
        self.core, self.clock = core, clock
        root_token = core.auth.bootstrap_local_owner(home / "credentials.json", "x")
        self.root = core.auth.authenticate(root_token)
        for sub in ("prod", "sec", "other"):
            core.subscriptions.create(self.root, sub)
        make = core.auth.create_token
        self.tokens = {
            "root": root_token,
            "alice": make(self.root, "alice", "Owner", "prod")["token"],
            "bob": make(self.root, "bob", "Contributor", "prod")["token"],
            "sam": make(self.root, "sam", "Owner", "sec")["token"],
            "sue": make(self.root, "sue", "Reader", "sec")["token"],
            "olga": make(self.root, "olga", "Owner", "other")["token"],
        }
        make(self.root, "alice-sec", "Reader", "sec", principal_name="alice")
        for vault, vm in (("v1", "web1"), ("v2", "web2")):
            core.vaults.create(self.root, "prod", vault, "local")
            make_folder_vm(home / "vms", vm)
        register_local_host(core, home / "vms")
        core.protection.enable(self.root, "prod", "v1", "web1")
        core.protection.enable(self.root, "prod", "v2", "web2")
        self.client = TestClient(create_app(core), raise_server_exceptions=False)
        self.call("sam", "POST", GUARDS, {"name": "g1"}, expect=201)
        for approver in ("sam", "sue", "alice"):
            self.call("sam", "PUT", f"{GUARDS}/g1/approvers/{approver}", expect=200)
        self.call("alice", "PUT", f"{V1}/resource-guard", {"guard": "g1", "guard_subscription": "sec"}, expect=200)

    def call(self, who: str, method: str, path: str, body=None, expect: int | None = None):
        r = self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        if expect is not None:
            assert r.status_code == expect, (who, method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def refused(self, who: str, method: str, path: str, body=None, code: str = "UserErrorMultiUserAuthorizationRequired",
                status: int = 403) -> dict:
        r = self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        assert r.status_code == status, (who, method, path, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == code, error
        return error

    def backup(self, vault: str = "v1", vm: str = "web1") -> str:
        job = self.core.protection.backup_now(self.root, "prod", vault, vm)
        run_job(self.core, job["id"])
        done = self.core.jobs.show(self.root, "prod", job["id"])
        assert done["status"] in ("Completed", "CompletedWithWarnings"), done
        return done["result"]["recovery_point_id"]

    def audit(self, who: str = "sam", **query) -> list[dict]:
        r = self.client.get(f"{API}/resource-guard-audit", params=query, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def gw(core, home, clock) -> GuardWorld:
    return GuardWorld(core, home, clock)

"""Every route of the dashboard (``/ui``) against ten principals, each in its own browser session, cell for
cell as the table "/ui" of ``docs/security.md`` states.

Each principal signs in through the sign-in form with its own token (``revoked`` and ``expired`` signed in
while their tokens were good; a host agent's credential cannot sign in at all) and posts forms with the
CSRF token of its own session. An allowed call answers neither 401 nor 403 and does not send the browser
back to sign-in; a refused one answers 401, 403 or 404 (another subscription is not revealed), or sends
the browser to sign in. A refused form is answered with a redirect (303) to its page carrying the error
in the signed flash (Post/Redirect/Get): its status and code are read from there.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from urllib.parse import parse_qs, urlsplit

from haven.api.app import create_app
from tests.foundation.helpers import make_folder_vm, register_local_host, run_job
from tests.security.principals import user_tokens
from tests.security.table import read_table

PRINCIPALS = ["none", "revoked", "expired", "reader", "operator", "contributor", "owner", "other-owner", "global-owner", "agent"]
TABLE = read_table("/ui", PRINCIPALS)
S, V = "/ui/s/prod", "/ui/s/prod/v/v1"
I = f"{V}/items/web1"

# (method, route) -> (request path, form); "{point}" and "{job}" are filled in from the world
REQUESTS = {
    ("GET", "/ui/signin"): ("/ui/signin", None),
    ("POST", "/ui/signin"): ("/ui/signin", {"token": "{own-token}", "next": "/ui/"}),
    ("POST", "/ui/signout"): ("/ui/signout", {}),
    ("GET", "/ui/"): ("/ui/", None),
    ("POST", "/ui/subscriptions"): ("/ui/subscriptions", {"name": "made-in-ui"}),
    ("GET", "/ui/vaults/new"): ("/ui/vaults/new", None),
    ("POST", "/ui/vaults/new"): ("/ui/vaults/new", {"name": "v-ui", "subscription": "prod", "region": "local"}),
    ("GET", "/ui/s/{sub}/v/{vault}"): (V, None),
    ("POST", "/ui/s/{sub}/v/{vault}/alerts"): (f"{V}/alerts", {"webhook": "http://127.0.0.1:9/hook"}),
    ("POST", "/ui/s/{sub}/v/{vault}/redundancy"): (f"{V}/redundancy", {"redundancy": "LRS"}),
    ("GET", "/ui/s/{sub}/v/{vault}/configure"): (f"{V}/configure?step=vms", None),
    ("POST", "/ui/s/{sub}/v/{vault}/configure/policy"): (f"{V}/configure/policy", {"name": "ui-policy", "time": "01:00", "daily_days": "7"}),
    ("POST", "/ui/s/{sub}/v/{vault}/configure/enable"): (f"{V}/configure/enable", {"policy": "DefaultPolicy", "vms": "web2"}),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}"): (I, None),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/backup"): (f"{I}/backup", {}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/stop"): (f"{I}/stop", {"data": "keep"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/undelete"): (f"{I}/undelete", {}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/policy"): (f"{I}/policy", {"policy": "DefaultPolicy"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/restore"): (f"{I}/restore", {"point": "{point}", "target": "/tmp/haven-ui-authz"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/restore-vm"): (f"{I}/restore-vm", {"point": "{point}", "name": "ui-authz-vm"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/replace-disks"): (f"{I}/replace-disks", {"point": "{point}"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/mount"): (f"{I}/mount", {"point": "0000"}),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/unmount"): (f"{I}/unmount", {"point": "0000"}),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}/delete-data"): (f"{I}/delete-data", None),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}/replace-confirm"): (f"{I}/replace-confirm?point={{point}}", None),
    ("POST", "/ui/s/{sub}/v/{vault}/items/{vm}/restore-keys"): (f"{I}/restore-keys", {"point": "{point}", "key_vault": "kv1"}),
    ("GET", "/ui/jobs"): ("/ui/jobs", None),
    ("GET", "/ui/s/{sub}/jobs/{job_id}"): (f"{S}/jobs/{{job}}", None),
    ("GET", "/ui/s/{sub}/jobs/{job_id}/status"): (f"{S}/jobs/{{job}}/status", None),
    ("POST", "/ui/s/{sub}/jobs/{job_id}/stop"): (f"{S}/jobs/{{job}}/stop", {}),
    ("GET", "/ui/readiness"): ("/ui/readiness", None),
    ("POST", "/ui/readiness/refresh"): ("/ui/readiness/refresh", {}),
    ("GET", "/ui/keyvault"): ("/ui/keyvault", None),
    ("GET", "/ui/network"): ("/ui/network", None),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}/points/{point}/files"): (f"{I}/points/{{point}}/files?path=/", None),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}/points/{point}/download"): (f"{I}/points/{{point}}/download?path=/", None),
    ("GET", "/ui/s/{sub}/v/{vault}/items/{vm}/find"): (f"{I}/find?name=x", None),
    ("POST", "/ui/keyvault/new"): ("/ui/keyvault/new", {"name": "kv-ui", "subscription": "prod", "region": "local"}),
    ("POST", "/ui/s/{sub}/kv/{key_vault}/access-policies"): (f"{S}/kv/kv1/access-policies",
                                                            {"principal": "Backup Management Service", "template": "Haven Backup"}),
    ("POST", "/ui/s/{sub}/kv/{key_vault}/access-policies/remove"): (f"{S}/kv/kv1/access-policies/remove",
                                                                   {"principal": "Backup Management Service"}),
}


def _outcome(r) -> tuple[int, str]:
    """The status and text of an answer; for a form refused with a redirect to its page, those of the error it carries."""
    found = parse_qs(urlsplit(r.headers.get("location", "")).query).get("err") if r.status_code == 303 else None
    if not found:
        return r.status_code, r.text
    errors = json.loads(base64.urlsafe_b64decode(found[0] + "=" * (-len(found[0]) % 4)))["e"]
    return max(e[3] for e in errors), " ".join(f"{e[0]}: {e[1]}" for e in errors)


def _browser(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def _sign_in(app, token: str | None) -> TestClient:
    """A browser that went through the sign-in form with ``token`` (it stays signed out if that was refused)."""
    client = _browser(app)
    if token:
        form = client.get("/ui/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        client.post("/ui/signin", data={"token": token, "csrf": csrf, "next": "/ui/"})
    return client


def _csrf(client: TestClient) -> str:
    """The CSRF token of the browser's session (what every dashboard form carries), or '' without one."""
    page = client.get("/ui/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text) if page.status_code == 200 else None
    return found.group(1) if found else ""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from haven.clock import FakeClock
    from haven.config import load_settings
    from haven.services.core import Haven

    home = tmp_path_factory.mktemp("ui-authz")
    (home / "vms").mkdir()
    clock = FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))
    core = Haven(load_settings(home, database_url=f"sqlite:///{home / 'h.db'}", restore_roots=(home,)), clock=clock)
    root = core.auth.authenticate(core.auth.bootstrap_local_owner(home / "cred.json", "x"))
    core.subscriptions.create(root, "prod")
    core.subscriptions.create(root, "dev")
    core.vaults.create(root, "prod", "v1", "local")
    core.keyvault.create(root, "prod", "kv1", "local")
    make_folder_vm(home / "vms", "web1")
    make_folder_vm(home / "vms", "web2")
    register_local_host(core, home / "vms")
    core.protection.enable(root, "prod", "v1", "web1")
    job = core.protection.backup_now(root, "prod", "v1", "web1")
    run_job(core, job["id"])
    (point,) = core.points.list(root, "prod", "v1", "web1")
    app = create_app(core)

    tokens, revoke = user_tokens(core, root)
    tokens["agent"] = core.agents.add_host(root, "far", "local", "folder:///nonexistent", shares=["prod"])["agent_token"]
    dead = {p: _sign_in(app, tokens[p]) for p in ("revoked", "expired")}  # signed in while their tokens were good
    assert all(_csrf(c) for c in dead.values())
    revoke()
    clock.advance(timedelta(hours=2))
    yield {"app": app, "core": core, "tokens": tokens, "dead": dead, "point": point["id"], "job": job["id"]}
    core.close()


def _session(world, principal: str) -> TestClient:
    return world["dead"][principal] if principal in world["dead"] else _sign_in(world["app"], world["tokens"][principal])


def test_the_table_lists_every_route_of_the_dashboard(world):
    from haven.web.pages import router  # the pages' own router: the application nests included routers

    routes = {(m, r.path) for r in router.routes for m in r.methods}
    assert set(TABLE) == routes, f"not in docs/security.md: {routes - set(TABLE)}; stale there: {set(TABLE) - routes}"
    assert set(REQUESTS) == routes, f"no request for: {routes - set(REQUESTS)}; stale: {set(REQUESTS) - routes}"


def test_a_host_agent_cannot_sign_in(world):
    client = _sign_in(world["app"], world["tokens"]["agent"])
    assert "haven_session" not in client.cookies
    form = client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = client.post("/ui/signin", data={"token": world["tokens"]["agent"], "csrf": csrf, "next": "/ui/"})
    status, text = _outcome(r)
    assert r.headers["location"].startswith("/ui/signin?") and status == 403 and "UserErrorAgentSignInRefused" in text


@pytest.mark.parametrize("route", sorted(REQUESTS), ids=lambda r: f"{r[0]} {r[1]}")
def test_page_authorization(world, route):
    method = route[0]
    path, form = REQUESTS[route]
    path = path.replace("{job}", world["job"]).replace("{point}", world["point"])
    expected = TABLE[route]
    for principal in sorted(PRINCIPALS, key=lambda p: expected[p]):  # refused first: an allowed post may change state
        client = _session(world, principal)
        if method == "GET":
            r = client.get(path)
        else:
            data = {k: v.replace("{point}", world["point"]).replace("{own-token}", world["tokens"][principal] or "")
                    for k, v in (form or {}).items()}
            if route == ("POST", "/ui/signin"):
                page = client.get("/ui/signin")
                data["csrf"] = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            else:
                data["csrf"] = _csrf(client)
            r = client.post(path, data=data)
        status, text = _outcome(r)
        to_signin = r.status_code in (302, 303, 307) and r.headers["location"].startswith("/ui/signin") \
            and "reason=signed-out" not in r.headers["location"]  # signing out ends there, as asked
        if expected[principal]:
            assert status not in (401, 403) and not to_signin, (principal, method, path, status, text[:600])
        else:
            assert to_signin or status in (401, 403, 404), (principal, method, path, status, text[:600])
            if status == 404:
                assert principal == "other-owner" and "UserErrorSubscriptionNotFound" in text, (principal, text[:600])

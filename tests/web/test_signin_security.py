"""Finding 5 of issue 16 — the dashboard's sign-in, over the application (TestClient): a cross-origin
or token-less sign-in is refused and the browser keeps its session; the sign-in reason comes from a
fixed list; every answer carries the security headers; the cookie holds a server-side session id
with an expiry, not the token; sign-out and a revoked token end the session at once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app

SIGNED_OUT_TEXT = "You were signed out"


@pytest.fixture
def app(core):
    return create_app(core)


def browser(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def signin_form(client: TestClient, path: str = "/ui/signin") -> tuple[str, str]:
    r = client.get(path)
    assert r.status_code == 200
    return r.text, re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)


def sign_in(client: TestClient, token: str) -> None:
    _, csrf = signin_form(client)
    r = client.post("/ui/signin", data={"token": token, "csrf": csrf, "next": "/ui/"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text[:500]


def who(client: TestClient) -> str:
    r = client.get("/ui/")
    assert r.status_code == 200, (r.status_code, r.headers.get("location"))
    return re.search(r'class="role" data-role="(\w+)"', r.text).group(1)


def reader_token(core, owner_token: str, name: str = "reader") -> dict:
    owner = core.auth.authenticate(owner_token)
    core.subscriptions.create(owner, "prod")
    return core.auth.create_token(owner, name, "Reader", subscription="prod")


def test_a_cross_origin_signin_is_refused_and_the_session_kept(app, core, owner_token):
    reader = reader_token(core, owner_token)["token"]
    client = browser(app)
    sign_in(client, owner_token)
    assert who(client) == "Owner"
    _, csrf = signin_form(client)  # even with the right CSRF token, another site's post is refused
    foreign = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
               {"Sec-Fetch-Site": "same-site"}, {"Referer": "http://evil.example/login-csrf.html"}]
    for headers in foreign:
        r = client.post("/ui/signin", data={"token": reader, "csrf": csrf, "next": "/ui/"}, headers=headers)
        assert r.status_code == 403 and "UserErrorCrossOriginRequest" in r.text, (headers, r.status_code, r.text[:300])
        assert "set-cookie" not in r.headers or "haven_session" not in r.headers["set-cookie"], headers
        assert who(client) == "Owner", headers
    # the same form from the dashboard itself (a browser's headers) works
    r = client.post("/ui/signin", data={"token": reader, "csrf": csrf, "next": "/ui/"},
                    headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303
    assert who(client) == "Reader"


def test_a_signin_without_the_csrf_token_is_refused(app, core, owner_token):
    reader = reader_token(core, owner_token)["token"]
    client = browser(app)
    sign_in(client, owner_token)
    for form in ({"token": reader}, {"token": reader, "csrf": ""}, {"token": reader, "csrf": "0" * 64}):
        r = client.post("/ui/signin", data=form)
        assert r.status_code == 403 and "UserErrorCsrfTokenInvalid" in r.text, (form, r.status_code, r.text[:300])
        assert who(client) == "Owner"
    # a token from the form of another browser (another pre-session cookie) is no good either
    other = browser(app)
    _, other_csrf = signin_form(other)
    r = client.post("/ui/signin", data={"token": reader, "csrf": other_csrf})
    assert r.status_code == 403 and "UserErrorCsrfTokenInvalid" in r.text
    assert who(client) == "Owner"
    # a fresh browser without the pre-session cookie cannot sign in with a token alone
    fresh = browser(app)
    r = fresh.post("/ui/signin", data={"token": owner_token, "csrf": other_csrf})
    assert r.status_code == 403 and "haven_session" not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize("reason", ["<script>alert(1)</script>", "Your account is locked: call +1 555 0100 now",
                                    "UserErrorTokenInvalid: The bearer token is unknown", "session-expired "])
def test_the_signin_reason_shows_only_fixed_codes(app, reason):
    client = browser(app)
    r = client.get("/ui/signin", params={"reason": reason})
    assert r.status_code == 200
    assert SIGNED_OUT_TEXT not in r.text
    assert "alert(1)" not in r.text and "555 0100" not in r.text and "bearer token is unknown" not in r.text


def test_a_known_reason_code_shows_its_fixed_text(app):
    r = browser(app).get("/ui/signin", params={"reason": "token-revoked"})
    assert f"{SIGNED_OUT_TEXT}: the API token you signed in with was revoked or is unknown." in r.text


def test_security_headers_on_dashboard_and_api_answers(app, owner_token):
    client = browser(app)
    sign_in(client, owner_token)
    for path in ("/ui/signin", "/ui/", "/ui/jobs", "/ui/s/nope/v/nope", "/ui/static/haven.js", "/ui/no-such-page"):
        r = client.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "same-origin", path
    api = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {owner_token}"})
    for path in ("/api/v1/subscriptions", "/api/v1/no-such-route", "/healthz"):
        r = api.get(path)
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), path
        assert r.headers.get("x-content-type-options") == "nosniff", path


def test_the_cookie_is_a_session_id_not_the_token(app, core, owner_token):
    client = browser(app)
    _, csrf = signin_form(client)
    r = client.post("/ui/signin", data={"token": owner_token, "csrf": csrf, "next": "/ui/"})
    set_cookie = ", ".join(r.headers.get_list("set-cookie"))
    assert owner_token not in set_cookie and owner_token.removeprefix("hvn_") not in set_cookie
    value = client.cookies.get("haven_session")
    assert value and value != owner_token and owner_token not in value and owner_token.removeprefix("hvn_") not in value
    max_age = re.search(r"haven_session=[^;]+;[^,]*Max-Age=(\d+)", set_cookie, re.I)  # the browser forgets it too
    assert max_age and 0 < int(max_age.group(1)) <= 12 * 3600, set_cookie
    assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
    # the session id is no API credential
    r = TestClient(app, raise_server_exceptions=False).get("/api/v1/subscriptions", headers={"Authorization": f"Bearer {value}"})
    assert r.status_code == 401
    assert who(client) == "Owner"


def test_an_expired_session_redirects_to_signin(app, core, owner_token, clock):
    client = browser(app)
    sign_in(client, owner_token)
    assert who(client) == "Owner"
    clock.advance(timedelta(hours=12, seconds=1))
    r = client.get("/ui/jobs")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/signin?") and "reason=session-expired" in r.headers["location"]
    page = client.get(r.headers["location"])
    assert "your dashboard session expired" in page.text
    # a post with the expired session changes nothing
    r = client.post("/ui/subscriptions", data={"name": "late", "csrf": "x"})
    assert r.status_code == 401 and "UserErrorSessionMissing" in r.text
    assert [s["name"] for s in core.subscriptions.list(core.auth.authenticate(owner_token))] == []


def test_a_session_never_outlives_its_token(app, core, owner_token, clock):
    owner = core.auth.authenticate(owner_token)
    core.subscriptions.create(owner, "prod")
    short = core.auth.create_token(owner, "short", "Reader", subscription="prod", expires_in=timedelta(hours=1))["token"]
    client = browser(app)
    sign_in(client, short)
    clock.advance(timedelta(minutes=59))
    assert who(client) == "Reader"
    clock.advance(timedelta(minutes=1, seconds=1))  # 11 hours before the session's own limit
    r = client.get("/ui/")
    assert r.status_code == 303 and "reason=session-expired" in r.headers["location"]


def test_a_revoked_token_signs_the_browser_out_at_once(app, core, owner_token):
    made = reader_token(core, owner_token)
    client = browser(app)
    sign_in(client, made["token"])
    assert who(client) == "Reader"
    core.auth.revoke_token(core.auth.authenticate(owner_token), made["id"])
    r = client.get("/ui/")
    assert r.status_code == 303 and "reason=token-revoked" in r.headers["location"]


def test_signout_deletes_the_session(app, owner_token):
    client = browser(app)
    sign_in(client, owner_token)
    stolen = client.cookies.get("haven_session")
    page = client.get("/ui/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/ui/signout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")
    # the old cookie, replayed from elsewhere, no longer signs anyone in
    replay = browser(app)
    replay.cookies.set("haven_session", stolen, path="/ui")
    r = replay.get("/ui/")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")

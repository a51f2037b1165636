"""Every list endpoint pages with one keyset cursor (``services/paging.py``): pages are disjoint and complete,
rows added while a client walks the list never shift a page, and a cursor another list made (or no list
made) is refused typed; the CLI offers --limit / --cursor and otherwise follows every page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.foundation.helpers import make_folder_vm, register_local_host, run_job

SUB = "/api/v1/subscriptions/prod"
VAULTS = f"{SUB}/vaults"
ITEMS = f"{VAULTS}/v1/items"


def walk(api, url: str, limit: int, between=None) -> tuple[list[dict], int]:
    """Every row of a list, ``limit`` at a time, following X-Next-Cursor; ``between`` runs after the first page."""
    rows, pages, cursor = [], 0, None
    while True:
        r = api.get(url, params={"limit": limit} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        assert len(r.json()) <= limit
        rows += r.json()
        pages += 1
        cursor = r.headers.get("X-Next-Cursor")
        if cursor:
            assert r.headers["Link"].endswith('rel="next"') and f"cursor={cursor}" in r.headers["Link"]
        if pages == 1 and between:
            between()
        if not cursor:
            return rows, pages


@pytest.fixture
def fleet(core, api, home):
    api.post("/api/v1/subscriptions", json={"name": "prod"}).raise_for_status()
    for name in ("v1", "v2", "v3", "v4"):
        api.post(VAULTS, json={"name": name, "region": "local"}).raise_for_status()
    for i in range(1, 10):
        make_folder_vm(home / "vms", f"vm{i}", size=1 << 20)
    register_local_host(core, home / "vms")
    r = api.post(ITEMS, json={"vms": [f"vm{i}" for i in range(2, 9)]})
    assert r.status_code == 200, r.text
    return home


def _names(rows, field="vm"):
    return [r[field] for r in rows]


def test_items_pages_are_disjoint_complete_and_stable_under_inserts(core, api, fleet):
    def protect_more():  # one VM sorts before the page already shown, one after it
        for name in ("vm1", "vm9"):
            api.post(ITEMS, json={"vm": name}).raise_for_status()

    rows, pages = walk(api, ITEMS, 3, between=protect_more)
    assert pages == 3
    assert _names(rows) == [f"vm{i}" for i in range(2, 10)]  # vm1 came in behind the cursor: next walk shows it
    assert _names(walk(api, ITEMS, 3)[0]) == [f"vm{i}" for i in range(1, 10)]


def test_recovery_points_page_newest_first_and_a_new_point_does_not_shift_a_page(core, api, fleet, clock):
    for _ in range(5):
        clock.advance(timedelta(minutes=5))
        run_job(core, api.post(f"{ITEMS}/vm2/backup", json={}).json()["id"])
    everything = api.get(f"{ITEMS}/vm2/recovery-points", params={"limit": 1000}).json()
    assert len(everything) == 5

    def back_up():
        clock.advance(timedelta(minutes=5))
        run_job(core, api.post(f"{ITEMS}/vm2/backup", json={}).json()["id"])

    rows, pages = walk(api, f"{ITEMS}/vm2/recovery-points", 2, between=back_up)
    assert pages == 3 and _names(rows, "id") == _names(everything, "id")


def test_vaults_policies_vms_and_hosts_page_by_name(core, api, fleet):
    for i in range(3):
        api.post(f"{VAULTS}/v1/policies", json={"name": f"p{i}", "schedule": {"frequency": "daily", "times": ["01:00"]},
                                                "retention": {"daily_days": 7}}).raise_for_status()
    register_local_host(core, fleet / "vms", name="host2")
    for url, limit, field, expected in (
        (VAULTS, 3, "name", ["v1", "v2", "v3", "v4"]),
        (f"{VAULTS}/v1/policies", 2, "name", ["DefaultPolicy", "p0", "p1", "p2"]),
        ("/api/v1/hosts", 1, "name", ["host1", "host2"]),
    ):
        rows, pages = walk(api, url, limit)
        assert _names(rows, field) == expected and pages == -(-len(expected) // limit), url
    vms, pages = walk(api, "/api/v1/vms", 4)
    assert sorted(_names(vms, "name")) == sorted(f"vm{i}" for i in range(1, 10) for _ in range(2)) and pages == 5
    assert len({v["id"] for v in vms}) == 18


def _cursor_of(url: str, key: list) -> str:
    import base64
    import json

    kind = url.rstrip("/").rsplit("/", 1)[-1]
    return base64.urlsafe_b64encode(json.dumps([kind, key]).encode()).decode().rstrip("=")


def test_a_cursor_not_made_by_the_list_is_refused_typed(core, api, fleet):
    vaults_cursor = api.get(VAULTS, params={"limit": 1}).headers["X-Next-Cursor"]
    items_cursor = api.get(ITEMS, params={"limit": 1}).headers["X-Next-Cursor"]
    for url in (ITEMS, f"{ITEMS}/vm2/recovery-points", VAULTS, f"{VAULTS}/v1/policies", f"{VAULTS}/v1/alerts",
                f"{VAULTS}/v1/file-downloads", f"{VAULTS}/v1/jobs", "/api/v1/vms", "/api/v1/hosts"):
        other = items_cursor if url == VAULTS else vaults_cursor
        # not a cursor; another list's; empty; a key of the wrong types (vaults, jobs, items); a NUL in a key
        for cursor in ("bm90LWEtY3Vyc29y", other, "W10", "WyJ2YXVsdHMiLFsxXV0", "WyJ2YXVsdHMiLFtudWxsLCJ4Il1d",
                       "WyJqb2JzIixbImEiLCJiIl1d", "WyJpdGVtcyIsWzEsImIiXV0", _cursor_of(url, ["a\x00", "b"])):
            r = api.get(url, params={"cursor": cursor})
            assert r.status_code == 400, (url, cursor, r.text)
            error = r.json()["error"]
            assert error["code"] == "UserErrorCursorInvalid" and error["recommendation"], (url, cursor)


def test_the_cli_pages_with_limit_and_cursor_and_follows_every_page_by_default(tmp_path):
    import json

    from typer.testing import CliRunner

    from haven.cli.main import app
    from tests.services.haven_server import HavenServer, run_cli as run

    for i in range(5):
        make_folder_vm(tmp_path / "srv" / "vms", f"vm{i}", size=1 << 20)
    server = HavenServer(tmp_path / "srv").start()
    try:
        run(server, "subscription", "create", "--name", "prod")
        run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
        run(server, "protection", "enable-for-vm", "-s", "prod", "-v", "v1", *[a for i in range(5) for a in ("--vm", f"vm{i}")])
        seen, cursor = [], None
        while True:
            args = ["--server", server.url, "--token", server.token, "item", "list", "-s", "prod", "-v", "v1", "-o", "json",
                    "--limit", "2"] + (["--cursor", cursor] if cursor else [])
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            page = json.loads(result.stdout)
            assert len(page) <= 2
            seen += [i["vm"] for i in page]
            hint = result.stderr.strip()
            if not hint:
                break
            assert hint.startswith("More: pass --cursor ")
            cursor = hint.split()[-1]
        assert seen == [f"vm{i}" for i in range(5)]
        assert [i["vm"] for i in run(server, "item", "list", "-s", "prod", "-v", "v1")] == seen
    finally:
        server.stop()

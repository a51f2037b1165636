"""List endpoints cost the same number of queries however many rows they show, and the jobs list pages
with a cursor (keyset on time and id): every job once, newest first, a bad cursor refused typed."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from tests.foundation.helpers import make_folder_vm, register_local_host, run_job

ITEMS = "/api/v1/subscriptions/prod/vaults/v1/items"
JOBS = "/api/v1/subscriptions/prod/vaults/v1/jobs"


class Statements:
    def __init__(self, engine):
        self.engine, self.count = engine, 0

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *args):
        self.count += 1


@pytest.fixture
def fleet(core, api, home):
    api.post("/api/v1/subscriptions", json={"name": "prod"}).raise_for_status()
    api.post("/api/v1/subscriptions/prod/vaults", json={"name": "v1", "region": "local"}).raise_for_status()
    for i in range(12):
        make_folder_vm(home / "vms", f"vm{i:02d}", size=1 << 20)
    register_local_host(core, home / "vms")

    def protect(names):
        r = api.post(ITEMS, json={"vms": names})
        assert r.status_code in (200, 201), r.text
        for name in names:
            job = api.post(f"{ITEMS}/{name}/backup", json={}).json()
            run_job(core, job["id"])
    return protect


def _cost(core, api, url) -> tuple[int, list]:
    with Statements(core.db.engine) as seen:
        r = api.get(url)
    assert r.status_code == 200, r.text
    return seen.count, r.json()


def test_the_items_list_costs_the_same_for_3_and_12_items(core, api, fleet):
    fleet([f"vm{i:02d}" for i in range(3)])
    few, shown = _cost(core, api, ITEMS)
    assert len(shown) == 3 and all(i["latest_recovery_point"] for i in shown)
    fleet([f"vm{i:02d}" for i in range(3, 12)])
    many, shown = _cost(core, api, ITEMS)
    assert len(shown) == 12 and all(i["latest_recovery_point"] and i["policy"] == "DefaultPolicy" for i in shown)
    assert many == few, f"{few} statements for 3 items, {many} for 12"


def test_the_jobs_list_costs_the_same_for_any_page_size(core, api, fleet):
    fleet([f"vm{i:02d}" for i in range(6)])
    small, page = _cost(core, api, f"{JOBS}?limit=2")
    large, everything = _cost(core, api, f"{JOBS}?limit=100")
    assert len(page) == 2 and len(everything) >= 7 and all(j["vm"] for j in everything if j["type"] == "Backup")
    assert large == small, f"{small} statements for 2 jobs, {large} for {len(everything)}"


def test_the_jobs_list_pages_with_a_cursor(core, api, fleet):
    fleet([f"vm{i:02d}" for i in range(5)])
    everything = api.get(f"{JOBS}?limit=1000").json()
    seen, url, pages = [], f"{JOBS}?limit=3", 0
    while url:
        r = api.get(url)
        assert r.status_code == 200
        seen += [j["id"] for j in r.json()]
        pages += 1
        following = r.headers.get("X-Next-Cursor")
        if following:
            assert 'rel="next"' in r.headers["Link"] and f"cursor={following}" in r.headers["Link"]
        url = f"{JOBS}?limit=3&cursor={following}" if following else None
    assert seen == [j["id"] for j in everything] and pages == -(-len(everything) // 3)
    bad = api.get(f"{JOBS}?cursor=bm90LWEtY3Vyc29y")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "UserErrorCursorInvalid"

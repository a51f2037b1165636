"""Layout edges in Chromium: at 390 px a long readiness badge ("Not reported by its host any more")
wraps inside its cell instead of being cut off; at 1280 px the open "Stop protection…" panel keeps
its distance from the next card."""

from __future__ import annotations

import shutil
import time

import pytest
from playwright.sync_api import expect

from tests.web.conftest import NARROW, WIDE, api, sign_in, vault_server

SUB, VAULT = "layout", "vault-layout"


@pytest.fixture(scope="module")
def haven(tmp_path_factory):
    with vault_server(tmp_path_factory, SUB, VAULT, {"sample-vm": 32, "gone-away": 16}, protect=("sample-vm",)) as server:
        yield server


def _inside(inner: dict, outer: dict) -> bool:
    return inner["x"] >= outer["x"] - 1 and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1


def test_a_long_readiness_badge_wraps_inside_its_cell_on_a_phone(browser, haven):
    shutil.rmtree(haven.home / "vms" / "gone-away")
    with api(haven) as c:  # the server's own agent reports every 30 s: wait until it says the VM is gone
        end = time.monotonic() + 60
        while next(v for v in c.get("/vms").json() if v["name"] == "gone-away")["power_state"] != "missing":
            assert time.monotonic() < end, "the VM was never reported missing"
            time.sleep(1)
    page = sign_in(browser, haven, haven.token, width=NARROW)
    page.goto(haven.url + f"/ui/s/{SUB}/v/{VAULT}/configure?step=vms&policy=DefaultPolicy")
    badge = page.locator("tr[data-vm=gone-away] .badge", has_text="Not reported by its host any more")
    expect(badge).to_be_visible()
    cell = page.locator("tr[data-vm=gone-away] td[data-label=Readiness]")
    card = page.locator("section.card", has=cell)
    assert _inside(badge.bounding_box(), cell.bounding_box()) and _inside(badge.bounding_box(), card.bounding_box())
    page.context.close()


def test_the_open_stop_protection_panel_keeps_its_distance_from_the_next_card(browser, haven):
    page = sign_in(browser, haven, haven.token, width=WIDE)
    page.goto(haven.url + f"/ui/s/{SUB}/v/{VAULT}")
    row = page.locator("#items tr[data-vm=sample-vm]")
    row.locator("details.stop summary").click()
    panel = row.locator("details.stop[open]").bounding_box()
    card = page.locator("#items").bounding_box()
    assert card["y"] + card["height"] - (panel["y"] + panel["height"]) >= 8, (panel, card)
    page.context.close()

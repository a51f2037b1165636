"""Roles, forgery and layout: a Reader sees no create/backup/restore actions and a forged POST is
refused (no CSRF token, or a role too low); every main page fits 1280 px and 390 px without
horizontal overflow."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.web.conftest import NARROW, WIDE, api, no_horizontal_overflow, refused, shot, sign_in

SUB, VAULT, VM = "prod", "vault-ro", "sample-vm"
VAULT_URL = f"/ui/s/{SUB}/v/{VAULT}"


@pytest.fixture(scope="module")
def populated(haven):
    """A subscription, a vault protecting the sample VM with one recovery point, and a Reader token, made through the API."""
    with api(haven) as c:
        c.post("/subscriptions", json={"name": SUB}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items", json={"vm": VM}).raise_for_status()
        job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/backup", json={}).json()
        end = time.monotonic() + 90
        while c.get(f"/subscriptions/{SUB}/jobs/{job['id']}").json()["status"] not in ("Completed", "CompletedWithWarnings"):
            assert time.monotonic() < end, "backup did not finish"
            time.sleep(0.3)
        reader = c.post("/tokens", json={"name": "web-reader", "role": "Reader", "subscription": SUB}).json()["token"]
    return {"job": job["id"], "reader": reader}


def _csrf(page) -> str:
    return page.locator("input[name=csrf]").first.get_attribute("value")


def test_a_reader_opening_the_configure_wizard_by_url_cannot_enable_backup(browser, haven, populated):
    page = sign_in(browser, haven, populated["reader"])
    page.goto(haven.url + f"{VAULT_URL}/configure?step=vms&policy=DefaultPolicy")
    expect(page.locator("#read-only-notice")).to_contain_text("needs the Operator role")
    expect(page.locator("#read-only-notice")).to_contain_text(SUB)
    expect(page.locator("#enable-backup")).to_be_disabled()
    for box in page.locator("#enable-form input[type=checkbox]").all():
        expect(box).to_be_disabled()
    page.context.close()


def test_reader_sees_no_actions_and_forged_posts_are_refused(browser, haven, populated):
    page = sign_in(browser, haven, populated["reader"])
    expect(page.locator(".role").first).to_have_text("Reader")
    expect(page.locator("a.vault-link", has_text=VAULT)).to_be_visible()
    expect(page.locator("#new-vault")).to_have_count(0)
    expect(page.locator("#create-subscription")).to_have_count(0)

    page.goto(haven.url + VAULT_URL)
    expect(page.locator("#items tr[data-vm=sample-vm]")).to_be_visible()
    for hidden in ("#configure-backup", "button.backup-now", "details.stop", "#save-redundancy"):
        expect(page.locator(hidden)).to_have_count(0)
    expect(page.locator("input[name=redundancy][value=LRS]")).to_be_disabled()

    page.goto(haven.url + f"{VAULT_URL}/items/{VM}")
    expect(page.locator("ol.timeline li.point")).to_have_count(1)
    expect(page.locator("#restore-disks")).to_have_count(0)
    shot(page, "reader-item")

    # a Reader with a valid CSRF token: the service refuses the role, nothing is queued
    csrf = _csrf(page)
    r = page.request.post(haven.url + f"{VAULT_URL}/items/{VM}/backup", form={"csrf": csrf}, max_redirects=0)
    assert refused(page, haven, r) == ["UserErrorAuthorizationFailed"]  # back on its page (303), the error shown there
    r = page.request.post(haven.url + "/ui/vaults/new", form={"csrf": csrf, "name": "v-reader", "subscription": SUB, "region": "local"},
                          max_redirects=0)
    assert refused(page, haven, r) == ["UserErrorAuthorizationFailed"]
    with api(haven) as c:
        assert [j["id"] for j in c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/jobs", params={"type": "Backup"}).json()] == [populated["job"]]
        assert [v["name"] for v in c.get(f"/subscriptions/{SUB}/vaults").json()] == [VAULT]
    page.context.close()


def test_posts_without_a_valid_csrf_token_or_session_are_refused(browser, haven, populated):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + VAULT_URL)
    for form in ({}, {"csrf": "0" * 64}):  # missing, and forged
        r = page.request.post(haven.url + f"{VAULT_URL}/items/{VM}/backup", form=form, max_redirects=0)
        assert r.status == 403 and "UserErrorCsrfTokenInvalid" in r.text()
        r = page.request.post(haven.url + f"{VAULT_URL}/items/{VM}/stop", form={**form, "data": "delete"}, max_redirects=0)
        assert r.status == 403 and "UserErrorCsrfTokenInvalid" in r.text()
    # no session at all
    r = httpx.post(haven.url + f"{VAULT_URL}/items/{VM}/backup", data={"csrf": _csrf(page)})
    assert r.status_code == 401 and "UserErrorSessionMissing" in r.text
    # the server checks the vault name too (not only the page's script), with code, message and fix
    r = page.request.post(haven.url + "/ui/vaults/new", form={"csrf": _csrf(page), "name": "9lives", "subscription": SUB, "region": "local"},
                          max_redirects=0)
    assert refused(page, haven, r) == ["UserErrorVaultNameInvalid"]
    assert "2 to 50 characters" in page.content() and "Fix:" in page.content()
    with api(haven) as c:
        item = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}").json()
        assert item["protection_state"] == "Protected"
        assert [j["id"] for j in c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/jobs", params={"type": "Backup"}).json()] == [populated["job"]]
        assert [v["name"] for v in c.get(f"/subscriptions/{SUB}/vaults").json()] == [VAULT]
    # an error page shows the code, the message and the fix
    page.goto(haven.url + f"/ui/s/{SUB}/v/no-such-vault")
    expect(page.locator(".error-code")).to_have_text("UserErrorVaultNotFound")
    expect(page.locator(".error-fix")).to_contain_text("haven vault list")
    page.context.close()


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_pages_fit_the_screen(browser, haven, populated, width):
    page = sign_in(browser, haven, haven.token, width=width)
    pages = ["/ui/", "/ui/vaults/new", VAULT_URL, f"{VAULT_URL}/configure", f"{VAULT_URL}/configure?step=policy",
             f"{VAULT_URL}/configure?step=vms&policy=DefaultPolicy", f"{VAULT_URL}/items/{VM}", "/ui/jobs",
             f"/ui/s/{SUB}/jobs/{populated['job']}", "/ui/readiness", "/ui/keyvault"]
    for path in pages:
        page.goto(haven.url + path)
        expect(page.locator("main")).to_be_visible()
        ok, why = no_horizontal_overflow(page)
        assert ok, f"{path} at {width} px: {why}"
    if width == NARROW:
        page.goto(haven.url + "/ui/jobs")
        shot(page, "jobs-narrow")
        page.goto(haven.url + f"{VAULT_URL}/configure?step=vms&policy=DefaultPolicy")
        shot(page, "configure-narrow")
    page.context.close()
    # the sign-in page too
    context = browser.new_context(viewport={"width": width, "height": 800})
    anon = context.new_page()
    anon.goto(haven.url + "/ui/jobs")
    expect(anon).to_have_url(re.compile(r"/ui/signin\?next=%2Fui%2Fjobs"))
    ok, why = no_horizontal_overflow(anon)
    assert ok, f"sign-in at {width} px: {why}"
    if width == WIDE:
        shot(anon, "signin")
    context.close()


def test_job_status_feed_and_delete_data_then_undelete(browser, haven, populated):
    page = sign_in(browser, haven, haven.token)
    status = page.request.get(haven.url + f"/ui/s/{SUB}/jobs/{populated['job']}/status").json()
    assert status["finished"] is True and status["percent"] == 100.0 and status["subtasks"]
    page.goto(haven.url + VAULT_URL)
    row = page.locator("#items tr[data-vm=sample-vm]")
    row.locator("details.stop summary").click()
    row.locator("input[name=data][value=delete]").check()
    row.locator("button.stop-protection").click()
    # deleting backup data asks first: nothing changes until the item's name is typed
    expect(page.locator("#stop-confirm")).to_contain_text("1 recovery point")
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}").json()["protection_state"] == "Protected"
    page.fill("#confirm-name", "not-the-vm")
    page.click("#confirm-stop")
    expect(page.locator("#confirm-mismatch")).to_be_visible()
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}").json()["protection_state"] == "Protected"
    page.fill("#confirm-name", VM)
    page.click("#confirm-stop")
    expect(page.locator(".flash")).to_contain_text("soft-deleted")
    expect(page.locator("#items tr[data-vm=sample-vm] .state")).to_have_text("SoftDeleted")
    page.locator("#items tr[data-vm=sample-vm] button.undelete").click()
    expect(page.locator(".flash")).to_contain_text("undeleted")
    expect(page.locator("#items tr[data-vm=sample-vm] .state")).to_have_text("ProtectionStopped")
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}").json()["protection_state"] == "ProtectionStopped"
    page.context.close()


def test_a_form_address_opened_in_the_browser_leads_back_to_its_page(browser, haven, populated):
    page = sign_in(browser, haven, haven.token)
    for form, holder in [(f"{VAULT_URL}/items/{VM}/backup", f"{VAULT_URL}/items/{VM}"),
                         (f"{VAULT_URL}/configure/enable", f"{VAULT_URL}/configure"),
                         (f"/ui/s/{SUB}/jobs/{populated['job']}/stop", f"/ui/s/{SUB}/jobs/{populated['job']}"),
                         ("/ui/signout", "/ui/")]:
        answer = page.goto(haven.url + form)
        assert answer.status == 200 and page.url == haven.url + holder, (form, page.url)
        assert "UserErrorMethodNotAllowed" not in page.content()
    # the API keeps its typed answer
    r = httpx.get(haven.url + "/api/v1/tokens/x/revoke", headers={"Authorization": f"Bearer {haven.token}"})
    assert r.status_code in (404, 405) and r.headers["content-type"].startswith("application/json")
    page.context.close()

"""Restore VM, file recovery and replace disks from the dashboard, in Chromium: a new VM from a point of
``sample-vm`` appears in the inventory; a name in use is refused with its code, message and fix; a point
mounted for file recovery shows the attach/mount instructions and its expiry, then is unmounted (no
qemu-nbd left); replace disks asks for confirmation first; a Reader sees none of these actions.
Also: the vault's alerts and alert targets, the prepare-check report and the key vaults."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.services._util import require_binary
from tests.web.conftest import NARROW, api, nbd_servers, no_horizontal_overflow, refused, shot, sign_in, wait_job

SUB, VAULT, VM = "ops", "vault-rs", "sample-vm"
VAULT_URL = f"/ui/s/{SUB}/v/{VAULT}"
ITEM_URL = f"{VAULT_URL}/items/{VM}"
DONE = re.compile(r"^(Completed|CompletedWithWarnings)$")


@pytest.fixture(scope="module")
def world(haven):
    """A vault protecting the sample VM with one recovery point, a Reader token and a failed job's alert, made through the API."""
    with api(haven) as c:
        c.post("/subscriptions", json={"name": SUB}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items", json={"vm": VM}).raise_for_status()
        job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/backup", json={}).json()
        assert wait_job(c, SUB, job["id"])["status"] in ("Completed", "CompletedWithWarnings")
        point = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points").json()[0]["id"]
        reader = c.post("/tokens", json={"name": "web-reader-rs", "role": "Reader", "subscription": SUB}).json()["token"]
    return {"point": point, "reader": reader}


def test_restore_vm_under_a_new_name_and_a_name_in_use_is_refused(browser, haven, world):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + ITEM_URL)
    expect(page.locator("#restore-vm-panel")).to_be_hidden()  # only the chosen option's panel shows
    page.check("#option-vm")
    expect(page.locator("#restore-vm-panel")).to_be_visible()
    expect(page.locator("#restore-disks")).to_be_hidden()
    expect(page.locator(".restore-options")).to_contain_text("never replaces an existing VM")

    # a name in use on the host: refused before anything is queued, with the seeds' advice, the form kept
    page.fill("#restore-vm-name", VM)
    page.click("#restore-vm")
    err = page.locator("#restore-vm-panel .error")
    expect(err.locator(".error-code")).to_have_text("UserErrorRestoreVmNameInUse")
    expect(err.locator(".error-msg")).to_contain_text("already exists")
    expect(err.locator(".error-fix")).to_contain_text("restore under a new name (the new VM's name field)")
    expect(err.locator(".error-fix")).to_contain_text("choose Replace disks")  # the dashboard's words, not CLI flags
    expect(err.locator(".error-fix")).not_to_contain_text("--target-vm-name")
    expect(page.locator("#restore-vm-name")).to_have_value(VM)
    with api(haven) as c:
        assert [j for j in c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/jobs").json() if j["type"] == "RestoreVm"] == []

    # a new name: the job defines the VM; the inventory (readiness page) lists it
    page.fill("#restore-vm-name", "sample-vm-restored")
    shot(page, "restore-vm")
    page.press("#restore-vm-name", "Enter")  # submits the Restore VM option, not the form's first button
    page.wait_for_url(re.compile(r"/ui/s/ops/jobs/"))
    expect(page.locator(".flash")).to_contain_text("as new VM sample-vm-restored")
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=90_000)
    expect(page.locator("#result")).to_contain_text("sample-vm-restored")
    assert (haven.home / "vms" / "sample-vm-restored" / "vm.json").exists()
    page.goto(haven.url + "/ui/readiness")
    expect(page.locator("#readiness tr[data-vm=sample-vm-restored]")).to_be_visible()
    page.context.close()


def test_file_recovery_mount_instructions_then_unmount(browser, haven, world):
    require_binary("qemu-nbd")
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + ITEM_URL)
    expect(page.locator("#no-mounts")).to_be_visible()
    page.check("#option-files")
    expect(page.locator("#files-panel")).to_be_visible()
    page.fill("#mount-hours", "0.1")  # closes by itself after 6 minutes even if the test fails half-way
    page.click("#mount-rp")
    page.wait_for_url(re.compile(r"/ui/s/ops/jobs/"))
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=90_000)
    expect(page.locator("#instructions")).to_contain_text("nbd-client -unix")
    expect(page.locator("#instructions")).to_contain_text("mount -o ro")
    expect(page.locator("#instructions")).to_contain_text("unmount-rp")
    expect(page.locator("#mount-expires")).to_contain_text("UTC")
    assert nbd_servers(haven.home), "no qemu-nbd serves the mounted point"

    page.click("#manage-mounts")
    mount = page.locator(f"#file-recovery .mount[data-point='{world['point']}']")
    expect(mount).to_be_visible()
    expect(mount.locator(".expires")).to_contain_text("UTC")
    expect(mount.locator("pre.instructions")).to_contain_text("modprobe nbd")
    page.locator("#file-recovery").scroll_into_view_if_needed()
    shot(page, "file-recovery")
    narrow = sign_in(browser, haven, haven.token, width=NARROW)
    narrow.goto(haven.url + ITEM_URL)
    ok, why = no_horizontal_overflow(narrow)
    assert ok, why
    narrow.context.close()

    mount.locator("button.unmount").click()
    expect(page.locator(".flash")).to_contain_text("unmounted (1 export session(s) closed)")
    expect(page.locator("#no-mounts")).to_be_visible()
    end = time.monotonic() + 10
    while nbd_servers(haven.home) and time.monotonic() < end:
        time.sleep(0.1)
    assert nbd_servers(haven.home) == []
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/mounts").json() == []
    page.context.close()


def test_replace_disks_asks_for_confirmation_and_explains_the_undo_point(browser, haven, world):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + ITEM_URL)
    page.check("#option-replace")
    expect(page.locator("#replace-panel")).to_contain_text("undo point")
    expect(page.locator("#power-state")).to_have_text("stopped")
    page.click("#replace-disks")
    expect(page.locator("#replace-confirm")).to_contain_text("undo point")
    expect(page.locator("#confirm-power")).to_have_text("stopped")
    page.click("#cancel-replace")  # nothing happens without the confirmation
    expect(page).to_have_url(re.compile(re.escape(ITEM_URL) + "$"))
    with api(haven) as c:
        assert [j for j in c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/jobs").json() if j["type"] == "ReplaceDisks"] == []
    page.context.close()


def test_reader_sees_no_restore_actions_and_cannot_post_them(browser, haven, world):
    page = sign_in(browser, haven, world["reader"])
    page.goto(haven.url + ITEM_URL)
    expect(page.locator("ol.timeline li.point")).to_have_count(1)
    for hidden in ("input[name=option]", "#restore-vm", "#replace-disks", "#mount-rp", "#file-recovery", "button.unmount"):
        expect(page.locator(hidden)).to_have_count(0)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for action, form in (("restore-vm", {"name": "by-reader"}), ("mount", {}), ("replace-disks", {"confirm": "1"}),
                         ("replace-disks", {})):
        r = page.request.post(haven.url + f"{ITEM_URL}/{action}", form={"csrf": csrf, "point": world["point"], **form}, max_redirects=0)
        assert refused(page, haven, r) == ["UserErrorAuthorizationFailed"], action  # back on the item page (303), shown at the top
    page.goto(haven.url + VAULT_URL)
    expect(page.locator("#alerts")).to_be_visible()
    expect(page.locator("#alert-settings")).to_have_count(0)
    page.context.close()


def test_vault_alerts_and_alert_targets(browser, haven, world):
    page = sign_in(browser, haven, haven.token)
    # a restore that fails in its job raises an alert: the target folder is a file
    blocker = haven.home / "not-a-folder"
    blocker.write_text("x")
    with api(haven) as c:
        r = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points/{world['point']}/restore-vm",
                   json={"target_vm_name": "doomed", "target": str(blocker / "sub")})
        if r.status_code == 202:
            wait_job(c, SUB, r.json()["id"])
        alerts = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/alerts").json()
    assert alerts, r.text
    page.goto(haven.url + VAULT_URL)
    expect(page.locator("#alerts tr.alert")).to_have_count(len(alerts))
    expect(page.locator("#alerts tr.alert").first).to_contain_text("RestoreVm")
    expect(page.locator("#alerts tr.alert").first).to_contain_text("Critical")
    page.fill("#alert-webhook", "ftp://example.org/hook")
    page.click("#save-alerts")
    expect(page.locator("#alerts .error-code")).to_have_text("UserErrorAlertTargetInvalid")
    expect(page.locator("#alerts .error-fix")).to_contain_text("http(s) URL")
    page.fill("#alert-webhook", "http://127.0.0.1:9/haven-hook?token=s3cret")
    page.fill("#alert-email", "ops@example.org")
    page.click("#save-alerts")
    expect(page.locator(".flash")).to_contain_text("webhook http://127.0.0.1:9/… and e-mail ops@example.org")
    assert "s3cret" not in page.url and "haven-hook" not in page.url  # the notice travels in the address
    page.check("input[name=clear_email]")
    page.click("#save-alerts")
    expect(page.locator(".flash")).to_contain_text("webhook http://127.0.0.1:9/… and e-mail (none)")
    page.context.close()


def test_readiness_prepare_check_and_key_vaults_render(browser, haven, world):
    with api(haven) as c:
        c.post(f"/subscriptions/{SUB}/keyvaults", json={"name": "kv-web", "region": "local"}).raise_for_status()
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + f"/ui/readiness?subscription={SUB}&check={VM}")
    row = page.locator(f"#readiness tr[data-vm={VM}]")
    expect(row.locator(".prepare-verdict")).to_have_text(re.compile(r"^(pass|warn|fail)$"))
    expect(row).to_contain_text("check(s) passed")
    page.goto(haven.url + "/ui/keyvault")
    expect(page.locator("main")).to_contain_text("kv-web")
    expect(page.locator("main")).to_contain_text("has no access policy here")  # the backup service is not allowed yet
    expect(page.locator("main")).to_contain_text("Haven Backup")
    page.context.close()

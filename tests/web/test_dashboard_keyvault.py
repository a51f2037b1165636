"""Seed 003 in the dashboard, in Chromium: create a key vault, see that the backup service has no access,
the wizard's notice on an encrypted VM naming its key vault and the problem, give the backup service the
"Haven Backup" template with one click (or Add → template → principal → Save), then enable backup of the
encrypted VM; remove a policy; a bad key vault name answered beside the form, with nothing created.
Then the seed's restore of an encrypted VM whose keys were lost: its KEK and BEK restored from a recovery
point into a key vault from the item's page (a Reader has no such option and is refused)."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from haven.demo import make_sample_vm
from tests.foundation.helpers import make_folder_vm
from tests.services.haven_server import HavenServer
from tests.web.conftest import api, refused, sign_in, wait_job
from tests.web.test_accessibility import _violations

SUB, VAULT, KV = "crypt", "vault-crypt", "kv-disks"
ENC = {"method": "luks", "key_vault": KV, "bek_secret": "enc1-bek", "kek_key": "enc1-kek"}
ENC2 = {"method": "luks", "key_vault": "kv-rp", "bek_secret": "enc2-bek", "kek_key": "enc2-kek"}


@pytest.fixture(scope="module")
def haven(tmp_path_factory):
    home = tmp_path_factory.mktemp("haven-kv")
    make_sample_vm(home / "vms", size_mib=32)
    for name, enc in (("enc1", ENC), ("enc2", ENC2)):
        folder = make_folder_vm(home / "vms", name)
        definition = json.loads((folder / "vm.json").read_text())
        (folder / "vm.json").write_text(json.dumps({**definition, "encryption": enc}))
    server = HavenServer(home).start()
    try:
        with api(server) as c:
            c.post("/subscriptions", json={"name": SUB}).raise_for_status()
            c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).raise_for_status()
            c.post("/tokens", json={"name": "kv-helper", "role": "Reader", "subscription": SUB, "principal": "kv-helper"}).raise_for_status()
        yield server
    finally:
        server.stop()


def test_key_vault_access_for_the_backup_service_then_an_encrypted_vm_is_protected(browser, haven):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + "/ui/keyvault")

    # a bad name: answered beside the form, nothing created
    page.fill("#kv-name", "x")
    page.select_option("#kv-subscription", SUB)
    page.click("#create-key-vault")
    expect(page.locator("#create-kv .error")).to_be_visible()
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/keyvaults").json() == []

    page.fill("#kv-name", KV)
    page.click("#create-key-vault")
    expect(page.locator(".flash")).to_contain_text(f"Key vault {KV} created")
    block = page.locator(f".kv-block[data-kv={KV}]")
    expect(block.locator(".backup-access-missing")).to_be_visible()
    with api(haven) as c:  # the VM's KEK and BEK, made the way a user makes them
        c.post(f"/subscriptions/{SUB}/keyvaults/{KV}/keys", json={"name": "enc1-kek"}).raise_for_status()
        c.put(f"/subscriptions/{SUB}/keyvaults/{KV}/secrets/enc1-bek", json={"value": "disk key"}).raise_for_status()

    # the wizard's notice: encrypted, which key vault, and why the backup would fail
    wizard = f"/ui/s/{SUB}/v/{VAULT}/configure?step=vms&policy=DefaultPolicy"
    page.goto(haven.url + wizard)
    notice = page.locator(".encrypted-notice[data-vm=enc1]")
    expect(notice).to_contain_text(f"Keys in key vault {KV}")
    expect(notice.locator(".error")).to_have_attribute("data-code", "UserErrorKeyVaultPermissionsNotConfigured")
    expect(page.locator(".encrypted-notice[data-vm=sample-vm]")).to_have_count(0)
    notice.get_by_role("link", name="Open the key vault's access policies").click()

    # one click: the "Haven Backup" template for the Backup Management Service
    block = page.locator(f".kv-block[data-kv={KV}]")
    block.locator("button.grant-backup").click()
    expect(page.locator(".flash")).to_contain_text("Access policy saved")
    row = page.locator(f".kv-block[data-kv={KV}] tr[data-principal='Backup Management Service']")
    expect(row).to_contain_text("get, list, backup")
    expect(page.locator(f".kv-block[data-kv={KV}] .backup-access-missing")).to_have_count(0)

    # Add → template → principal → Save, then remove it again
    block = page.locator(f".kv-block[data-kv={KV}]")
    block.locator("details.add-policy summary").click()
    block.locator("details.add-policy select[name=template]").select_option("Key Management")
    block.locator("details.add-policy input[name=principal]").fill("kv-helper")
    block.locator("button.save-policy").click()
    helper = page.locator(f".kv-block[data-kv={KV}] tr[data-principal=kv-helper]")
    expect(helper).to_contain_text("create")
    helper.locator("button.remove-policy").click()
    expect(page.locator(".flash")).to_contain_text("removed")
    expect(page.locator(f".kv-block[data-kv={KV}] tr[data-principal=kv-helper]")).to_have_count(0)

    # back in the wizard: the service has access, and the encrypted VM is protected
    page.goto(haven.url + wizard)
    expect(page.locator(".encrypted-notice[data-vm=enc1]")).to_contain_text("The backup service has access.")
    page.locator("tr[data-vm=enc1] input[type=checkbox]").check()
    page.click("#enable-backup")
    expect(page.locator(".flash")).to_contain_text("enc1")
    with api(haven) as c:
        assert c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/enc1").json()["protection_state"] == "Protected"
    page.context.close()


def test_ticked_vms_in_the_wizard_survive_a_reload(browser, haven):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + f"/ui/s/{SUB}/v/{VAULT}/configure?step=vms&policy=DefaultPolicy")
    box = page.locator("tr[data-vm=sample-vm] input[type=checkbox]")
    expect(box).to_be_enabled()
    box.check()
    page.reload()
    expect(page.locator("tr[data-vm=sample-vm] input[type=checkbox]")).to_be_checked()
    page.locator("tr[data-vm=sample-vm] input[type=checkbox]").uncheck()
    page.reload()
    expect(page.locator("tr[data-vm=sample-vm] input[type=checkbox]")).not_to_be_checked()
    page.context.close()


def _names(c, key_vault: str, kind: str) -> list[str]:
    return sorted(x["name"] for x in c.get(f"/subscriptions/{SUB}/keyvaults/{key_vault}/{kind}").json())


def test_keys_and_secrets_of_an_encrypted_vm_restored_from_a_point_into_a_key_vault(browser, haven):
    kvs, items = f"/subscriptions/{SUB}/keyvaults", f"/subscriptions/{SUB}/vaults/{VAULT}/items"
    with api(haven) as c:  # enc2 protected with its keys, backed up, then its keys lost (deleted and purged)
        for name in ("kv-rp", "kv-new"):
            c.post(kvs, json={"name": name, "region": "local"}).raise_for_status()
        c.post(f"{kvs}/kv-rp/keys", json={"name": "enc2-kek"}).raise_for_status()
        c.put(f"{kvs}/kv-rp/secrets/enc2-bek", json={"value": "disk key 2"}).raise_for_status()
        c.put(f"{kvs}/kv-rp/access-policies/Backup Management Service", json={"template": "Haven Backup"}).raise_for_status()
        c.post(items, json={"vm": "enc2"}).raise_for_status()
        job = c.post(f"{items}/enc2/backup", json={}).json()
        assert wait_job(c, SUB, job["id"])["status"] in ("Completed", "CompletedWithWarnings")
        point = c.get(f"{items}/enc2/recovery-points").json()[0]["id"]
        for kind, name in (("keys", "enc2-kek"), ("secrets", "enc2-bek")):
            c.delete(f"{kvs}/kv-rp/{kind}/{name}").raise_for_status()
            c.post(f"{kvs}/kv-rp/{kind}/{name}/purge").raise_for_status()
        reader = c.post("/tokens", json={"name": "kv-reader", "role": "Reader", "subscription": SUB}).json()["token"]
    item_url = f"{haven.url}/ui/s/{SUB}/v/{VAULT}/items/enc2"

    # a Reader: no such option, and a forged post is refused by the key vault's access policies; nothing restored
    page = sign_in(browser, haven, reader)
    page.goto(item_url)
    expect(page.locator("ol.timeline li.point")).to_have_count(1)
    expect(page.locator("#option-keys")).to_have_count(0)
    expect(page.locator("#restore-keys")).to_have_count(0)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(f"{item_url}/restore-keys", form={"csrf": csrf, "point": point, "key_vault": "kv-new"}, max_redirects=0)
    assert refused(page, haven, r) == ["UserErrorKeyVaultAccessDenied"]
    with api(haven) as c:
        assert _names(c, "kv-new", "keys") == [] and _names(c, "kv-new", "secrets") == []
    page.context.close()

    page = sign_in(browser, haven, haven.token, bypass_csp=True)  # axe is injected as a script
    page.goto(item_url)
    page.check("#option-keys")
    panel = page.locator("#restore-keys-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("enc2-kek")
    expect(panel).to_contain_text("enc2-bek")
    assert _violations(page) == []

    # a key vault that does not exist: refused in the panel with code, message and the dashboard's fix
    page.locator("#restore-keys-vault").evaluate("s => { s.options[s.selectedIndex].value = 'kv-gone'; }")
    page.click("#restore-keys")
    error = page.locator("#restore-keys-panel .error")
    expect(error).to_have_attribute("data-code", "UserErrorKeyVaultNotFoundForRestore")
    expect(error.locator(".error-msg")).to_contain_text("kv-gone")
    expect(error.locator(".error-fix")).to_contain_text("Key vault page")
    expect(error.locator(".error-fix")).not_to_contain_text("--")
    assert page.reload().request.method == "GET"  # the refusal came back by redirect: a reload posts nothing

    # into another key vault, the key and its secret; then into the VM's own key vault, the key only
    page.select_option("#restore-keys-vault", "kv-new")
    page.click("#restore-keys")
    expect(page.locator(".flash")).to_contain_text("Restored key enc2-kek, secret enc2-bek")
    expect(page.locator(".flash")).to_contain_text("kv-new")
    page.check("#option-keys")
    page.select_option("#restore-keys-vault", "kv-rp")
    page.select_option("#restore-keys-what", "keys")
    page.click("#restore-keys")
    expect(page.locator(".flash")).to_contain_text(re.compile(r"Restored key enc2-kek of recovery point .* into key vault kv-rp"))
    with api(haven) as c:
        assert _names(c, "kv-new", "keys") == ["enc2-kek"] and _names(c, "kv-new", "secrets") == ["enc2-bek"]
        assert _names(c, "kv-rp", "keys") == ["enc2-kek"] and _names(c, "kv-rp", "secrets") == []
    page.context.close()

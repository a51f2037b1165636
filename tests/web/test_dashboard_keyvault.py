"""Seed 003 in the dashboard, in Chromium: create a key vault, see that the backup service has no access,
the wizard's notice on an encrypted VM naming its key vault and the problem, give the backup service the
"Haven Backup" template with one click (or Add → template → principal → Save), then enable backup of the
encrypted VM; remove a policy; a bad key vault name answered beside the form, with nothing created."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from haven.demo import make_sample_vm
from tests.foundation.helpers import make_folder_vm
from tests.services.haven_server import HavenServer
from tests.web.conftest import api, sign_in

SUB, VAULT, KV = "crypt", "vault-crypt", "kv-disks"
ENC = {"method": "luks", "key_vault": KV, "bek_secret": "enc1-bek", "kek_key": "enc1-kek"}


@pytest.fixture(scope="module")
def haven(tmp_path_factory):
    home = tmp_path_factory.mktemp("haven-kv")
    make_sample_vm(home / "vms", size_mib=32)
    folder = make_folder_vm(home / "vms", "enc1")
    definition = json.loads((folder / "vm.json").read_text())
    (folder / "vm.json").write_text(json.dumps({**definition, "encryption": ENC}))
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

"""The dashboard end to end, in Chromium: sign in, create a vault (live name validation first),
configure backup of the sample VM, back up now and watch the job finish, restore disks (byte for byte),
stop protection. Screenshots of the main pages go to docs/screenshots/."""

from __future__ import annotations

import filecmp
import re

from playwright.sync_api import expect

from tests.web.conftest import NARROW, WIDE, no_horizontal_overflow, shot, sign_in

DONE = re.compile(r"^(Completed|CompletedWithWarnings)$")


def test_create_vault_configure_backup_restore_and_stop(browser, haven, tmp_path):
    page = sign_in(browser, haven, haven.token)

    # -- a subscription, then quick create with live name validation
    page.fill("#sub-name", "default")
    page.click("#create-subscription")
    expect(page.locator(".flash")).to_contain_text("Subscription default created")
    page.click("#new-vault")
    name = page.locator("#name")
    name.fill("1-bad")
    expect(page.locator("#name-check")).to_contain_text("start with a letter")
    expect(name).to_have_class(re.compile("invalid"))
    expect(page.locator("#create-vault")).to_be_disabled()
    name.fill("vault_web")
    expect(page.locator("#name-check")).to_contain_text("Only letters, digits and hyphens")
    name.fill("v")
    expect(page.locator("#name-check")).to_contain_text("at least 2 characters")
    name.fill("v" * 51)
    expect(page.locator("#name-check")).to_contain_text("at most 50 characters")
    name.fill("1-bad")
    shot(page, "vault-create")
    name.fill("vault-web")
    expect(page.locator("#name-check")).to_contain_text("Valid name")
    expect(page.locator("#create-vault")).to_be_enabled()
    page.select_option("#region", "local")
    page.click("#create-vault")

    # -- the vault page: quick start, redundancy (editable now), usage
    page.wait_for_url(re.compile(r"/ui/s/default/v/vault-web"))
    expect(page.locator(".flash")).to_contain_text("Vault vault-web created")
    expect(page.locator("#quick-start")).to_contain_text("Configure backup")
    expect(page.locator("#save-redundancy")).to_be_visible()
    page.check("input[name=redundancy][value=LRS]")
    page.click("#save-redundancy")
    expect(page.locator(".flash")).to_contain_text("Storage redundancy of vault-web is LRS")

    # -- configure backup: goal -> policy -> VMs -> enable
    page.click("#configure-backup")
    expect(page.locator("ol.wizard li.on")).to_contain_text("Backup goal")
    page.click("#goal-next")
    expect(page.locator("ol.wizard li.on")).to_contain_text("Policy")
    expect(page.locator("input[name=policy][value=DefaultPolicy]")).to_be_checked()
    page.click("#policy-next")
    row = page.locator("tr[data-vm=sample-vm]")
    expect(row).to_contain_text("Crash-consistent")  # a stopped image-folder VM, no guest agent
    row.locator("input[name=vms]").check()
    shot(page, "configure-backup")
    page.click("#enable-backup")
    expect(page.locator(".flash")).to_contain_text("Backup enabled for sample-vm with policy DefaultPolicy")
    item_row = page.locator("#items tr[data-vm=sample-vm]")
    expect(item_row.locator(".state")).to_have_text("Protected")
    expect(page.locator("#redundancy-locked")).to_contain_text("cannot be changed")
    expect(page.locator("#save-redundancy")).to_have_count(0)

    # -- back up now, then watch the job finish (job page and jobs list)
    item_row.locator("button.backup-now").click()
    page.wait_for_url(re.compile(r"/ui/s/default/jobs/"))
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=90_000)
    expect(page.locator("#subtasks")).to_contain_text("Transfer data to vault")
    shot(page, "job")
    page.goto(haven.url + "/ui/jobs?type=Backup")
    backup = page.locator("tr.job").filter(has_text="Backup").first
    expect(backup.locator(".badge.status")).to_have_text(DONE, timeout=90_000)
    shot(page, "jobs")

    # -- the vault page now shows the last backup and the consistency; then the item's recovery points
    page.goto(haven.url + "/ui/s/default/v/vault-web")
    expect(page.locator("#items tr[data-vm=sample-vm]")).to_contain_text("CrashConsistent")
    shot(page, "vault")
    page.locator("a.item-link", has_text="sample-vm").click()
    expect(page.locator("ol.timeline li.point")).to_have_count(1)
    expect(page.locator("#points")).to_contain_text("Restore disks")

    # -- restore disks to a folder, and compare with the sample VM's disk byte for byte
    target = tmp_path / "restored"
    page.fill("#restore-target", str(target))
    shot(page, "recovery-points")
    page.click("#restore-disks")
    page.wait_for_url(re.compile(r"/ui/s/default/jobs/"))
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=90_000)
    expect(page.locator("#result")).to_contain_text("vda.raw")
    assert filecmp.cmp(target / "vda.raw", haven.home / "vms" / "sample-vm" / "vda.raw", shallow=False)
    assert (target / "vm-template.json").exists()

    # -- narrow screen: the vault page still fits
    narrow = sign_in(browser, haven, haven.token, width=NARROW)
    narrow.goto(haven.url + "/ui/s/default/v/vault-web")
    ok, why = no_horizontal_overflow(narrow)
    assert ok, why
    shot(narrow, "vault-narrow")
    narrow.context.close()

    # -- stop protection, keeping the data
    page.goto(haven.url + "/ui/s/default/v/vault-web")
    item_row = page.locator("#items tr[data-vm=sample-vm]")
    item_row.locator("details.stop summary").click()
    item_row.locator("input[name=data][value=keep]").check()
    item_row.locator("button.stop-protection").click()
    expect(page.locator(".flash")).to_contain_text("Protection of sample-vm stopped (ProtectionStopped)")
    expect(page.locator("#items tr[data-vm=sample-vm] .state")).to_have_text("ProtectionStopped")
    expect(page.locator("#items tr[data-vm=sample-vm] button.backup-now")).to_have_count(0)

    # -- the vault list and the readiness page
    page.goto(haven.url + "/ui/")
    expect(page.locator("a.vault-link", has_text="vault-web")).to_be_visible()
    shot(page, "vaults")
    page.goto(haven.url + "/ui/readiness")
    expect(page.locator("#readiness tr[data-vm=sample-vm]")).to_contain_text("not installed")
    shot(page, "readiness")
    page.context.close()
    assert WIDE == 1280

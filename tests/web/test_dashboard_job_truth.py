"""Job pages tell the truth: a backup that failed shows no step still running and no "started" notice
over the failure, says that no point was made, and a completed backup's result reads as facts
(sizes as sizes, the point as a link to it), not as raw dictionaries."""

from __future__ import annotations

import re
import shutil

import pytest
from playwright.sync_api import expect

from haven.services.jobs import _settled
from tests.web.conftest import api, sign_in, vault_server, wait_job

SUB, VAULT = "truth", "vault-truth"


@pytest.fixture(scope="module")
def haven(tmp_path_factory):
    with vault_server(tmp_path_factory, SUB, VAULT, {"sample-vm": 32, "gone1": 16}, protect=("sample-vm", "gone1")) as server:
        yield server


def test_a_failed_backup_shows_no_running_step_and_no_started_notice(browser, haven):
    shutil.rmtree(haven.home / "vms" / "gone1")  # the VM is gone from its host
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + f"/ui/s/{SUB}/v/{VAULT}/items/gone1")
    page.click("button.backup-now")
    page.wait_for_url(re.compile(r".*/ui/s/truth/jobs/[^/?]+\?msg=.*"))
    job_id = page.url.split("/jobs/")[1].split("?")[0]
    with api(haven) as c:
        assert wait_job(c, SUB, job_id)["status"] == "Failed"
    page.reload()
    expect(page.locator("#job-status")).to_have_text("Failed")
    expect(page.locator(".flash")).to_have_count(0)  # "Backup of gone1 started." is not shown over the failure
    expect(page.locator("#no-point")).to_contain_text("No recovery point was made")
    for status in page.locator("#subtasks tbody tr td[data-label=Status]").all_inner_texts():
        assert status not in ("InProgress", "NotStarted"), status
    expect(page.locator("progress")).to_have_count(0)
    with api(haven) as c:
        job = c.get(f"/subscriptions/{SUB}/jobs/{job_id}").json()
        assert all(t["status"] not in ("InProgress", "NotStarted") for t in job["subtasks"])  # the API says the same
    page.context.close()


def test_a_completed_backup_result_reads_as_facts_with_a_link_to_its_point(browser, haven):
    with api(haven) as c:
        job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/sample-vm/backup", json={}).json()
        done = wait_job(c, SUB, job["id"])
        assert done["status"] in ("Completed", "CompletedWithWarnings")
    point = done["result"]["recovery_point_id"]
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + f"/ui/s/{SUB}/jobs/{job['id']}")
    result = page.locator("#result")
    expect(result.locator("dd[data-key=parent]")).to_have_text("none (a full backup)")
    expect(result.locator("dd[data-key=bytes_read]")).to_have_text(re.compile(r"^[\d.]+ (B|KiB|MiB|GiB)$"))
    expect(result).not_to_contain_text("None")
    link = result.locator("dd[data-key=recovery_point_id] a")
    expect(link).to_have_text(point)
    link.click()
    page.wait_for_url(re.compile(rf".*/items/sample-vm#rp-{point}$"))
    expect(page.locator(f"#rp-{point}")).to_be_visible()
    page.context.close()


def test_the_rule_settles_unfinished_steps_of_an_ended_job():
    steps = [{"name": "Take snapshot", "status": "Completed"}, {"name": "Transfer data to vault", "status": "InProgress", "percent": 2.5},
             {"name": "Commit", "status": "NotStarted"}]
    assert [t["status"] for t in _settled(steps, "Cancelled")] == ["Completed", "Cancelled", "Cancelled"]
    assert [t["status"] for t in _settled(steps, "Failed")] == ["Completed", "Failed", "Failed"]
    assert _settled(steps, "InProgress") == steps


def test_one_name_per_job_type_and_an_any_restore_filter(browser, haven):
    item = f"/subscriptions/{SUB}/vaults/{VAULT}/items/sample-vm"
    with api(haven) as c:
        points = c.get(f"{item}/recovery-points").json()
        if not points:
            assert wait_job(c, SUB, c.post(f"{item}/backup", json={}).json()["id"])["status"].startswith("Completed")
            points = c.get(f"{item}/recovery-points").json()
        point = points[0]["id"]
        copy = c.post(f"{item}/recovery-points/{point}/restore-vm", json={"target_vm_name": "truth-copy"}).json()
        mount = c.post(f"{item}/recovery-points/{point}/mount", json={"hours": 0.1}).json()
        assert wait_job(c, SUB, copy["id"])["status"].startswith("Completed")
        mounted = wait_job(c, SUB, mount["id"])
        assert mounted["status"].startswith("Completed")
        assert [t["name"] for t in mounted["subtasks"]][:1] == ["Prepare disk vda for file recovery"]  # not "Restore disk"
        c.post(f"{item}/recovery-points/{point}/unmount", json={}).raise_for_status()
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + "/ui/jobs")
    page.select_option("#job-filters select[name=type]", "any-restore")
    page.click("#job-filters button[type=submit]")
    shown = page.locator("tr.job td[data-label=Operation]").all_inner_texts()
    assert "Restore VM" in shown and "File recovery (mount)" in shown and "Backup" not in shown, shown
    page.locator("tr.job td[data-label=Operation] a", has_text="Restore VM").first.click()
    expect(page.locator("h1")).to_contain_text("Restore VM")
    expect(page.locator("#job dl.kv")).to_contain_text("Restore VM")
    expect(page.locator("#job dl.kv")).not_to_contain_text("RestoreVm")
    page.context.close()

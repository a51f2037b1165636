"""File recovery in the browser, straight from the vault, in Chromium: browse a point's folders with
breadcrumbs, download a file and a whole folder (tar) and compare them byte for byte with the files in
the VM's own disk, find a file across points; a Reader is refused; every download is in the audit."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile

import pytest
from playwright.sync_api import expect

from tests.services._util import require_binary
from tests.web.conftest import api, sign_in, wait_job

SUB, VAULT, VM = "files", "vault-files", "sample-vm"
ITEM_URL = f"/ui/s/{SUB}/v/{VAULT}/items/{VM}"


def _original(haven, path: str, tmp_path) -> bytes:
    """The file as it is in the VM's own disk image, read with debugfs (no mount)."""
    debugfs = require_binary("debugfs")
    out = tmp_path / "original"
    subprocess.run([debugfs, "-R", f"dump {path} {out}", str(haven.home / "vms" / VM / "vda.raw")], check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def backed_up(haven):
    with api(haven) as c:
        c.post("/subscriptions", json={"name": SUB}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items", json={"vm": VM}).raise_for_status()
        job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/backup", json={}).json()
        assert wait_job(c, SUB, job["id"])["status"] in ("Completed", "CompletedWithWarnings")
        reader = c.post("/tokens", json={"name": "files-reader", "role": "Reader", "subscription": SUB}).json()["token"]
        point = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points").json()[0]["id"]
    return {"reader": reader, "point": point}


def test_browse_download_and_find_files_of_a_point(browser, haven, backed_up, tmp_path):
    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + ITEM_URL)
    page.locator("a.browse-files").first.click()
    page.wait_for_url(re.compile(r".*/points/.*/files.*"))
    entries = page.locator("#entries")
    expect(entries.locator("tr[data-name=home][data-type=dir]")).to_be_visible()
    expect(entries.locator("tr[data-name=etc][data-type=dir]")).to_be_visible()
    entries.locator("tr[data-name=home] a", has_text="home/").click()
    expect(page.locator("#breadcrumbs")).to_contain_text("home")
    notes = page.locator("#entries tr[data-name='notes.txt']")
    expect(notes).to_contain_text("file")

    with page.expect_download() as got:
        notes.locator("a.download").click()
    downloaded = got.value.path().read_bytes()
    assert downloaded == _original(haven, "/home/notes.txt", tmp_path)

    with page.expect_download() as got:
        page.click("#download-folder")
    archive = tarfile.open(fileobj=io.BytesIO(got.value.path().read_bytes()))
    members = {m.name: m for m in archive.getmembers()}
    assert {"home", "home/notes.txt", "home/random.bin"} <= set(members)
    assert archive.extractfile("home/random.bin").read() == _original(haven, "/home/random.bin", tmp_path)
    assert archive.extractfile("home/notes.txt").read() == downloaded

    # back to the top by the breadcrumbs, then find the file in every point
    page.locator("#breadcrumbs a", has_text="/").click()
    expect(page.locator("#entries tr[data-name=etc]")).to_be_visible()
    page.fill("#find-name", "notes.txt")
    page.locator("form:has(#find-name) button[type=submit]").click()
    row = page.locator(f"#matches tr[data-point='{backed_up['point']}']")
    expect(row).to_contain_text("/home/notes.txt")
    row.get_by_role("link", name="folder").click()
    expect(page.locator("#entries tr[data-name='notes.txt']")).to_be_visible()

    with api(haven) as c:  # every download is recorded, with who and how much
        audit = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/file-downloads").json()
        done = [(a["path"], a["kind"], a["status"]) for a in audit]
        assert ("/home/notes.txt", "file", "Completed") in done and ("/home", "folder", "Completed") in done
        assert all(a["principal"] for a in audit)
    page.context.close()


def test_a_reader_cannot_browse_files(browser, haven, backed_up):
    page = sign_in(browser, haven, backed_up["reader"])
    page.goto(haven.url + ITEM_URL)
    expect(page.locator("a.browse-files")).to_have_count(0)
    answer = page.goto(haven.url + f"{ITEM_URL}/points/{backed_up['point']}/files")
    assert answer.status == 403
    expect(page.locator(".error")).to_have_attribute("data-code", "UserErrorAuthorizationFailed")
    answer = page.goto(haven.url + f"{ITEM_URL}/points/{backed_up['point']}/download?path=/home/notes.txt")
    assert answer.status == 403
    page.context.close()

"""A recovery point that verify found damaged, on the item page in Chromium: marked Corrupt, never the
preselected point, its restore refused with the code and the fix; once healed, Available again."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.web.conftest import api, sign_in, wait_job

SUB, VAULT, VM = "ops", "vault-cp", "sample-vm"
ITEM_URL = f"/ui/s/{SUB}/v/{VAULT}/items/{VM}"


def _backup(c) -> None:
    job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/backup", json={}).json()
    assert wait_job(c, SUB, job["id"])["status"] in ("Completed", "CompletedWithWarnings")


def _verify(c) -> dict:
    job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/verify", json={"read_data": True}).json()
    return wait_job(c, SUB, job["id"])


def test_a_corrupt_point_is_marked_not_preselected_and_not_restorable(browser, haven, tmp_path):
    with api(haven) as c:
        c.post("/subscriptions", json={"name": SUB}).raise_for_status()
        vault = c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).json()
        c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items", json={"vm": VM}).raise_for_status()
        _backup(c)
        old = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points").json()[0]["id"]
        # damage every chunk of this vault on disk: the first point is Corrupt
        chunks = [p for p in haven.home.rglob("*") if p.is_file() and "chunks" in p.parts and vault["id"] in p.parts]
        assert chunks
        for victim in chunks:
            data = bytearray(victim.read_bytes())
            data[len(data) // 2] ^= 0x01
            victim.write_bytes(bytes(data))
        assert _verify(c)["result"]["points_marked_corrupt"] == [old]
        _backup(c)  # a newer point, whole again (it stores the quarantined data anew); the old one stays Corrupt till verify
        new = next(p["id"] for p in c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points").json() if p["id"] != old)

    page = sign_in(browser, haven, haven.token)
    page.goto(haven.url + ITEM_URL)
    damaged = page.locator(f"li.point:has(input[value='{old}'])")
    expect(damaged.locator(".point-state")).to_have_text("Corrupt")
    expect(damaged).to_contain_text("not restorable")
    expect(page.locator(f"li.point:has(input[value='{new}']) .point-state")).to_have_count(0)
    expect(page.locator(f"input[name=point][value='{new}']")).to_be_checked()  # the whole one is preselected
    expect(damaged.locator("input[name=point]")).not_to_be_checked()

    page.check(f"input[name=point][value='{old}']")
    page.fill("#restore-target", str(tmp_path / "out"))
    page.click("#restore-disks")
    expect(page.locator("body")).to_contain_text("UserErrorRecoveryPointCorrupt")
    expect(page.locator("body")).to_contain_text("haven vault verify")
    assert not (tmp_path / "out").exists()

    with api(haven) as c:
        assert _verify(c)["result"]["points_healed"] == [old]
    page.goto(haven.url + ITEM_URL)
    expect(page.locator(".point-state")).to_have_count(0)
    page.context.close()

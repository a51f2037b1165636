"""Accessibility: axe-core (from npm, the project's own package.json) runs on every page of the dashboard
in Chromium, wide and narrow, and reports no serious or critical violation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import NARROW, WIDE, api, sign_in, wait_job

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SUB, VAULT, VM = "a11y", "vault-a11y", "sample-vm"
VAULT_URL = f"/ui/s/{SUB}/v/{VAULT}"


@pytest.fixture(scope="module")
def pages(haven):
    """A subscription, a vault protecting the sample VM with one point, and the dashboard's pages over them."""
    with api(haven) as c:
        c.post("/subscriptions", json={"name": SUB}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults", json={"name": VAULT, "region": "local"}).raise_for_status()
        c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items", json={"vm": VM}).raise_for_status()
        job = c.post(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/backup", json={}).json()
        assert wait_job(c, SUB, job["id"])["status"] in ("Completed", "CompletedWithWarnings")
        point = c.get(f"/subscriptions/{SUB}/vaults/{VAULT}/items/{VM}/recovery-points").json()[0]["id"]
    return {
        "vaults": "/ui/",
        "vault-new": "/ui/vaults/new",
        "vault": VAULT_URL,
        "configure-goal": f"{VAULT_URL}/configure",
        "configure-policy": f"{VAULT_URL}/configure?step=policy",
        "configure-vms": f"{VAULT_URL}/configure?step=vms&policy=DefaultPolicy",
        "item": f"{VAULT_URL}/items/{VM}",
        "delete-data": f"{VAULT_URL}/items/{VM}/delete-data",
        "replace-confirm": f"{VAULT_URL}/items/{VM}/replace-confirm?point={point}",
        "jobs": "/ui/jobs",
        "job": f"/ui/s/{SUB}/jobs/{job['id']}",
        "readiness": f"/ui/readiness?subscription={SUB}",
        "keyvault": "/ui/keyvault",
        "error": f"/ui/s/{SUB}/v/no-such-vault",
    }


def _violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`);
    }""")
    return result


@pytest.mark.parametrize("width", [WIDE, NARROW], ids=["wide", "narrow"])
def test_no_serious_accessibility_violation_on_any_page(browser, haven, pages, width):
    assert AXE.exists(), f"{AXE} is missing: run `make setup-node`"
    page = sign_in(browser, haven, haven.token, width=width, bypass_csp=True)  # axe is injected as a script
    found = {}
    for name, url in pages.items():
        page.goto(haven.url + url)
        found[name] = _violations(page)
    context = page.context
    context.clear_cookies()
    page.goto(haven.url + "/ui/signin")
    found["signin"] = _violations(page)
    context.close()
    bad = {k: v for k, v in found.items() if v}
    assert not bad, "\n".join(f"{k}: {line}" for k, lines in bad.items() for line in lines)

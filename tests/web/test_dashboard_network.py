"""Network connectivity in the dashboard (seeds 000–004), in Chromium: the path a real ``haven agent`` on
another host takes to the vault's storage and its probe, as that agent reported them; the region's IP
ranges and the firewall rules for the allow-list and for the proxy option in the seed's three steps."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from tests.foundation.helpers import make_folder_vm
from tests.services._util import start
from tests.services.haven_server import HavenServer
from tests.web.conftest import api, sign_in


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    home = tmp_path_factory.mktemp("haven-net")
    (home / "vms").mkdir()
    server = HavenServer(home).start()
    agent = None
    try:
        with api(server) as c:
            c.post("/subscriptions", json={"name": "prod"}).raise_for_status()
            c.post("/subscriptions/prod/vaults", json={"name": "v1", "region": "local"}).raise_for_status()
        token_file = home / "far" / "token"
        done = subprocess.run([sys.executable, "-m", "haven.cli.main", "host", "add", "--name", "far", "--region", "local",
                               "--share", "prod", "--token-file", str(token_file)], env=server.cli_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        far_vms = home / "far-vms"
        make_folder_vm(far_vms, "far-vm")
        agent = start([sys.executable, "-m", "haven.cli.main", "agent", "--server", server.url, "--token-file", str(token_file),
                       "--adapter", f"folder://{far_vms}", "--home", str(home / "far")], home / "far" / "agent.log",
                      env={"HAVEN_HOME": str(home / "far")})
        end = time.monotonic() + 90
        with api(server) as c:
            while not any(h["name"] == "far" and (h.get("network") or {}).get("vaults") for h in c.get("/hosts").json()):
                assert time.monotonic() < end, (home / "far" / "agent.log").read_text()[-2000:]
                time.sleep(0.5)
        yield server
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(20)
        server.stop()


def test_the_network_page_shows_each_agents_path_and_the_firewall_rules(browser, fleet):
    page = sign_in(browser, fleet, fleet.token)
    page.click("nav a:has-text('Network')")
    far = page.locator("#hosts tr[data-host=far]")
    expect(far).to_contain_text("direct")
    expect(far.locator(".probe .badge")).to_have_text("reachable")
    expect(page.locator("#hosts tr").filter(has_text="inside the server")).to_have_count(1)

    expect(page.locator("#ip-ranges")).to_have_text("127.0.0.0/8")
    expect(page.locator("#rules")).to_contain_text("elements = { 127.0.0.0/8 }")

    page.check("input[name=option][value=proxy]")
    page.click("#show-rules")
    expect(page.locator(".error")).to_have_attribute("data-code", "UserErrorFirewallOptionInvalid")  # no proxy address given
    page.check("input[name=option][value=proxy]")
    page.fill("#proxy-host", "10.0.0.5")
    page.click("#show-rules")
    expect(page.locator("#proxy-steps li")).to_have_count(3)
    expect(page.locator("#rules")).to_contain_text("ip daddr 10.0.0.5 tcp dport 3128 accept")
    page.context.close()

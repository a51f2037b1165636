"""Fixtures for the dashboard's end-to-end tests: a real ``haven serve`` with the sample VM, and
Debian's Chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from haven.demo import make_sample_vm
from tests.services._util import require
from tests.services.haven_server import HavenServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDE, NARROW = 1280, 390


@pytest.fixture(scope="module")
def haven(tmp_path_factory) -> Iterator[HavenServer]:
    """A server whose local host agent reports ``sample-vm`` (made before start: the agent lists VMs at start)."""
    home = tmp_path_factory.mktemp("haven-web")
    make_sample_vm(home / "vms", size_mib=32)
    server = HavenServer(home).start()
    try:
        yield server
    finally:
        close_file_recovery_sessions(home)
        server.stop()


@contextmanager
def vault_server(tmp_path_factory, sub: str, vault: str, vms: dict[str, int], protect: tuple[str, ...] = ()) -> Iterator[HavenServer]:
    """A server whose host reports ``vms`` (name -> disk MiB), with subscription ``sub``, vault ``vault`` and
    the VMs in ``protect`` protected, made through the API; stopped (file-recovery sessions closed) after."""
    home = tmp_path_factory.mktemp(f"haven-{sub}")
    for name, mib in vms.items():
        make_sample_vm(home / "vms", name=name, size_mib=mib)
    server = HavenServer(home).start()
    try:
        with api(server) as c:
            c.post("/subscriptions", json={"name": sub}).raise_for_status()
            c.post(f"/subscriptions/{sub}/vaults", json={"name": vault, "region": "local"}).raise_for_status()
            for vm in protect:
                c.post(f"/subscriptions/{sub}/vaults/{vault}/items", json={"vm": vm}).raise_for_status()
        yield server
    finally:
        close_file_recovery_sessions(home)
        server.stop()


def refused(page, server: HavenServer, answer) -> list[str]:
    """A form refused by the server (``answer``, posted with ``max_redirects=0``) is sent back to its page with a
    303 (Post/Redirect/Get); opens that page and returns the codes of the errors it shows."""
    assert answer.status == 303, (answer.status, answer.text()[:300])
    page.goto(server.url + answer.headers["location"])
    return page.locator(".error").evaluate_all("els => els.map(e => e.dataset.code)")


def close_file_recovery_sessions(home: Path) -> None:
    """Close any file-recovery session a failed test left open (its NBD servers run in their own process group)."""
    import json

    from haven.services.restore import close_session

    for record in sorted((home / "file-recovery").glob("*.json")) if (home / "file-recovery").is_dir() else []:
        try:
            close_session(json.loads(record.read_text()))
        except (OSError, ValueError):
            continue


def nbd_servers(home: Path) -> list[int]:
    """Pids of qemu-nbd processes serving files under ``home`` (none may survive an unmount)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-nbd" in cmdline and str(home).encode() in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="session")
def browser():
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        require(False, "the Python playwright package")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def sign_in(browser, server: HavenServer, token: str, width: int = WIDE, **options):
    """A new browser context signed in with ``token`` through the sign-in form; returns its page.
    ``options`` go to the context (e.g. ``bypass_csp`` for a test that injects a checker)."""
    context = browser.new_context(viewport={"width": width, "height": 900}, **options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(server.url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/$"))
    return page


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def api(server: HavenServer, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token or server.token}"}, timeout=30)


def no_horizontal_overflow(page) -> tuple[bool, str]:
    """True when nothing makes the page wider than the viewport; else the widest offenders."""
    result = page.evaluate("""() => {
        const w = document.documentElement.clientWidth;
        const wide = [];
        for (const el of document.querySelectorAll('body *')) {
            const r = el.getBoundingClientRect();
            if (r.right > w + 1 && r.width > 0) wide.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right));
        }
        return {ok: document.documentElement.scrollWidth <= w, width: document.documentElement.scrollWidth, viewport: w,
                offenders: wide.slice(0, 5)};
    }""")
    return result["ok"], f"scrollWidth {result['width']} > {result['viewport']}: {result['offenders']}"


def wait_job(client: httpx.Client, sub: str, job_id: str, timeout: float = 90) -> dict:
    """Poll the API until job ``job_id`` of subscription ``sub`` has ended; its last view."""
    end = time.monotonic() + timeout
    while True:
        job = client.get(f"/subscriptions/{sub}/jobs/{job_id}").json()
        if job["status"] in ("Completed", "CompletedWithWarnings", "Failed", "Cancelled"):
            return job
        assert time.monotonic() < end, f"job {job_id} did not finish"
        time.sleep(0.2)

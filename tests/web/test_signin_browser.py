"""Finding 5 of issue 16, in Chromium: a page on another site that posts the sign-in form (login CSRF)
does not replace the signed-in Owner's session; another site cannot frame the dashboard; the
dashboard's own script works under its Content-Security-Policy, which no page violates."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect

from tests.web.conftest import api, sign_in

EVIL = "http://evil.test"


def _serve_foreign_page(context, html: str) -> None:
    context.route(f"{EVIL}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))


def test_a_foreign_page_cannot_swap_the_session(browser, haven):
    with api(haven) as c:
        c.post("/subscriptions", json={"name": "csrf-sub"}).raise_for_status()
        reader = c.post("/tokens", json={"name": "csrf-reader", "role": "Reader", "subscription": "csrf-sub"}).json()["token"]
    page = sign_in(browser, haven, haven.token)
    expect(page.locator(".role").first).to_have_text("Owner")
    _serve_foreign_page(page.context, f"""<!doctype html><html><body>
      <form id="f" method="post" action="{haven.url}/ui/signin">
        <input name="token" value="{reader}"><input name="next" value="/ui/"><input name="csrf" value="{'0' * 64}">
      </form><script>document.getElementById('f').submit();</script></body></html>""")
    with page.expect_navigation(url=re.compile(re.escape(haven.url) + r"/ui/signin")) as nav:
        page.goto(f"{EVIL}/win-a-prize.html")
    assert nav.value.status == 403
    expect(page.locator(".error-code")).to_have_text("UserErrorCrossOriginRequest")
    page.goto(haven.url + "/ui/")
    expect(page.locator(".role").first).to_have_text("Owner")  # still the Owner's own session
    page.context.close()


@contextmanager
def foreign_site(html: str) -> Iterator[str]:
    """A real server on another port (another origin on this machine) answering ``html`` to every GET."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_another_site_cannot_frame_the_dashboard(browser, haven):
    context = browser.new_context()
    page = context.new_page()
    with foreign_site(f'<!doctype html><html><body><iframe src="{haven.url}/ui/signin"></iframe></body></html>') as other:
        with page.expect_response(re.compile(re.escape(haven.url) + r"/ui/signin")) as framed:
            page.goto(f"{other}/frame.html")
        assert framed.value.status == 200  # the server answered; the browser refused to show it
        page.wait_for_timeout(500)
        child = next(f for f in page.frames if f != page.main_frame)
        assert child.locator("#token").count() == 0, child.url
    context.close()


def test_the_dashboard_script_runs_under_its_csp_without_violations(browser, haven):
    page = sign_in(browser, haven, haven.token)
    page.context.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                                 " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    violations = {}
    for path in ("/ui/", "/ui/vaults/new", "/ui/jobs", "/ui/readiness", "/ui/keyvault"):
        response = page.goto(haven.url + path)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        expect(page.locator("main")).to_be_visible()
        if path == "/ui/vaults/new":  # the dashboard's own script, loaded from /ui/static, still validates live
            page.fill("#name", "1-bad")
            expect(page.locator("#name-check")).to_contain_text("start with a letter")
        found = page.evaluate("window.__csp")
        if found:
            violations[path] = found
    assert violations == {}
    page.context.close()

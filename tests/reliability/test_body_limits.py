"""Finding 4 of issue 16 — bodies are limited before they are read: a real ``haven serve`` is sent
oversized bodies (declared with Content-Length, and chunked without one), without credentials and
with them, on the API and the dashboard; each is refused (413, or 401 unread) and the server's
resident memory stays within a bound."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.haven_server import HavenServer

from .conftest import MiB, report

#: How much the server's resident memory may grow over the whole battery.
RSS_BOUND = 100 * MiB
CHUNK = bytes(64 << 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[HavenServer]:
    s = HavenServer(tmp_path_factory.mktemp("limits")).start()
    try:
        yield s
    finally:
        s.stop()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    sock.settimeout(30)
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "the server answered nothing"
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body[:300].decode(errors="replace")}


def send_oversized(server: HavenServer, method: str, path: str, total: int, headers: dict[str, str], chunked: bool) -> tuple[int, dict, int]:
    """Send ``total`` bytes of body (or until the server answers); the answer and how much was sent."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *(f"{k}: {v}" for k, v in headers.items())]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        if not _readable(sock, 0.5):
            while sent < total and not _readable(sock, 0):
                part = CHUNK[: total - sent]
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(part)
            if sent >= total and chunked:
                try:
                    sock.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
        status, body = _answer(sock)
        return status, body, sent
    finally:
        sock.close()


def test_oversized_bodies_are_refused_before_they_are_read(server):
    token = server.token
    pid = server.proc.pid
    # a signed-in dashboard session, for the dashboard's form posts
    import httpx

    with httpx.Client(base_url=server.url, follow_redirects=False) as web:
        page = web.get("/ui/signin")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0] if 'name="csrf"' in page.text else ""
        signed = web.post("/ui/signin", data={"token": token, "next": "/ui/", "csrf": csrf})
        assert signed.status_code == 303, signed.text[:300]
        cookie = "; ".join(f"{k}={v}" for k, v in web.cookies.items())
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        api.post("/api/v1/subscriptions", json={"name": "warm"}).raise_for_status()  # the routes are warm
    base = rss(pid)
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    anonymous = {"Content-Type": "application/json"}
    cases = [
        # (method, path, bytes, headers, chunked, expected status)
        ("POST", "/api/v1/subscriptions", 512 * MiB, anonymous, False, 413),
        ("POST", "/api/v1/subscriptions", 512 * MiB, bearer, False, 413),
        ("POST", "/api/v1/subscriptions", 256 * MiB, bearer, True, 413),
        ("POST", "/api/v1/subscriptions", 256 * MiB, anonymous, True, 401),
        ("PUT", "/api/v1/agent/vms", 256 * MiB, bearer, True, 413),
        ("POST", "/ui/subscriptions", 256 * MiB, {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, True, 413),
        ("POST", "/ui/signin", 256 * MiB, {"Content-Type": "application/x-www-form-urlencoded"}, True, 413),
        ("POST", "/ui/signin", 512 * MiB, {"Content-Type": "application/x-www-form-urlencoded"}, False, 413),
    ]
    peak = base
    for method, path, total, headers, chunked, expected in cases:
        status, body, sent = send_oversized(server, method, path, total, headers, chunked)
        peak = max(peak, rss(pid))
        assert status == expected, (method, path, chunked, status, body)
        code = body.get("error", {}).get("code")
        if expected == 413:
            assert code == "UserErrorRequestTooLarge", body
            assert body["error"]["recommendation"] and str(body["error"]["details"]["limit"]) in body["error"]["recommendation"]
        else:
            assert code == "UserErrorTokenInvalid", body
        assert sent < 64 * MiB, f"{path}: the server let {sent} bytes in before answering"
        assert peak - base < RSS_BOUND, f"{path}: RSS grew {(peak - base) / MiB:.0f} MiB"
    # the server still answers, and nothing was created by the refused bodies
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert [s["name"] for s in api.get("/api/v1/subscriptions").json()] == ["warm"]
    report("body_limits", requests=len(cases), rss_growth_mib=round((peak - base) / MiB, 1))


def test_bodies_within_the_limit_still_work(server):
    import httpx

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as api:
        # chunked, under the cap: read and answered as usual
        r = api.post("/api/v1/subscriptions", content=iter([b'{"name": ', b'"chunked-ok"}']), headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        r = api.post("/api/v1/subscriptions", content=b'{"name": "' + b"a" * (900 << 10) + b'"}', headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["error"]["code"] != "UserErrorRequestTooLarge", r.text[:300]

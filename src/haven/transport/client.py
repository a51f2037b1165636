"""The HTTP client of Haven's API, for the CLI and the remote host agent: finds the server and token by itself
(unless given), turns API errors into HavenErrors."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haven.config import default_home
from haven.errors import HavenError, Transient, error_from_payload

__all__ = ["ApiClient", "ServerUnreachable"]


class ServerUnreachable(Transient):
    code = "UserErrorServerUnreachable"
    message = "The Haven server at {url} did not answer: {reason}"
    recommendation = "Start it with 'haven serve' (or 'make run'), or point the CLI at it with --server / HAVEN_SERVER."


_ENDED = ("Completed", "CompletedWithWarnings", "Failed", "Cancelled")


def _httpx():
    """httpx, imported with the first client: a CLI call that fails before talking to the server does not pay
    for it, nor for httpx's own command line (``httpx._main``: click, pygments, rich), which is left out."""
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]  # httpx falls back to a stub main()
        try:
            import httpx
        finally:
            del sys.modules["httpx._main"]
    import httpx

    return httpx


def _credentials(home: Path) -> dict:
    try:
        return json.loads((home / "credentials.json").read_text())
    except (OSError, ValueError):
        return {}


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 60.0):
        creds = _credentials(default_home())
        self.server = (server or os.environ.get("HAVEN_SERVER") or creds.get("server") or "http://127.0.0.1:8733").rstrip("/")
        self.token = token or os.environ.get("HAVEN_TOKEN") or creds.get("token")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # The control plane is reached directly; proxies are for the agent's data path.
        self._http = _httpx().Client(base_url=self.server + "/api/v1", headers=headers, timeout=timeout, trust_env=False)

    def request(self, method: str, path: str, **kwargs) -> Any:
        return self._send(method, path, **kwargs)[0]

    def page(self, path: str, **params) -> tuple[list, str | None]:
        """One page of a list and the cursor of the next (its X-Next-Cursor; None on the last page)."""
        return self._send("GET", path, params={k: v for k, v in params.items() if v is not None})

    def get_all(self, path: str, **params) -> list:
        """Every row of a list, following each page's cursor."""
        rows, cursor = self.page(path, **params, limit=1000)
        while cursor:
            more, cursor = self.page(path, **params, limit=1000, cursor=cursor)
            rows += more
        return rows

    def _send(self, method: str, path: str, **kwargs) -> tuple[Any, str | None]:
        try:
            r = self._http.request(method, path, **kwargs)
        except _httpx().HTTPError as e:
            raise ServerUnreachable(url=self.server, reason=str(e) or type(e).__name__) from None
        if r.status_code == 204:
            return None, None
        try:
            body = r.json()
        except ValueError:
            body = {"error": {"code": "InternalError", "message": r.text[:500]}}
        if r.status_code >= 400:
            raise error_from_payload(body, r.status_code, among_loaded=True)
        return body, r.headers.get("X-Next-Cursor")

    def download(self, path: str, params: dict, sink) -> tuple[int, str]:
        """GET a body too large to hold (a file, a tar stream): each block goes to ``sink`` as it arrives;
        returns the bytes received and the content type. An error answer raises its HavenError."""
        try:
            with self._http.stream("GET", path, params={k: v for k, v in params.items() if v is not None}, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    try:
                        body = r.json()
                    except ValueError:
                        body = {"error": {"code": "InternalError", "message": r.text[:500]}}
                    raise error_from_payload(body, r.status_code, among_loaded=True)
                total = 0
                for block in r.iter_bytes(1 << 20):
                    sink(block)
                    total += len(block)
                return total, r.headers.get("content-type", "")
        except _httpx().HTTPError as e:
            raise ServerUnreachable(url=self.server, reason=str(e) or type(e).__name__) from None

    def wait_job(self, subscription: str, job_id: str, timeout: float, hold: float = 10.0,
                 seen: Callable[[dict], None] | None = None) -> dict:
        """The job once it has ended, or as it is after ``timeout`` seconds. Each request is a long poll
        (``?wait=``, answered as soon as the job's status changes), so the end is noticed at once; a server
        that answers at once without a change (no long poll) is asked again after 0.1 s, then less often
        (up to a second). ``seen`` gets every answer (a progress bar)."""
        end = time.monotonic() + timeout
        delay, last = 0.1, None
        while True:
            asked = time.monotonic()
            hold_for = round(max(0.0, min(hold, end - asked)), 1)
            job = self.get(f"/subscriptions/{subscription}/jobs/{job_id}", wait=hold_for)
            if seen is not None:
                seen(job)
            if job.get("status") in _ENDED or time.monotonic() >= end:
                return job
            if job.get("status") != last:
                last, delay = job.get("status"), 0.1
            elif time.monotonic() - asked < hold_for / 2:  # no change, answered early: a server without long polls
                time.sleep(min(delay, max(0.0, end - time.monotonic())))
                delay = min(1.0, delay * 1.5)

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def put(self, path: str, body: dict) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: dict) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


__all__ += ["HavenError"]

"""Alerts reach a real webhook and a real SMTP server; /metrics reports what Prometheus needs."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from aiosmtpd.controller import Controller

from haven.jobs.scheduler import Scheduler
from tests.services._util import free_port


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch):
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("HAVEN_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HAVEN_SMTP_PORT", str(port))
    yield inbox
    controller.stop()


@pytest.fixture
def webhook():
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_failed_backup_and_overdue_item_alert_webhook_and_email(world, core, clock, smtp, webhook):
    from haven.services.alerts import AlertService

    core.alerts = AlertService(core)  # picks up the SMTP settings of this test
    world.runner.on_failure = core.alerts.job_failed
    url, received = webhook
    world.setup()
    core.alerts.configure(world.owner, "prod", "v1", url, "ops@example.org")
    (world.vm_folder / "vda.raw").unlink()  # the disk vanished: the backup must fail
    failed = world.backup()
    assert failed["status"] == "Failed" and failed["error"]["code"]
    assert [a["kind"] for a in received] == ["BackupFailed"] and "web1" in received[0]["message"]
    assert smtp.messages and smtp.messages[0][0] == ["ops@example.org"] and "BackupFailed" in smtp.messages[0][1]
    stored = core.alerts.list(world.owner, "prod", "v1")
    assert stored[0]["delivered"] == ["webhook", "email"]
    # no good backup for three days: the item is overdue (once per day, not once per tick)
    clock.advance(timedelta(days=3))
    Scheduler(core).tick()
    Scheduler(core).tick()
    assert [a["kind"] for a in received].count("NoRecentBackup") == 1
    assert points_none(world)


def points_none(world) -> bool:
    return world.points() == []


def test_metrics_report_time_since_last_good_backup_jobs_and_bytes(world, core, clock):
    from fastapi.testclient import TestClient

    from haven.api.app import create_app

    api = TestClient(create_app(core), headers={"Authorization": f"Bearer {world.token}"})
    world.setup()
    world.backup()
    clock.advance(timedelta(minutes=5))
    text = api.get("/metrics").text
    assert 'haven_seconds_since_last_good_backup{vault="v1",vm="web1"} 300.0' in text
    assert 'haven_jobs_total{status="Completed",type="Backup"} 1.0' in text or 'haven_jobs_total{status="CompletedWithWarnings",type="Backup"} 1.0' in text
    assert 'haven_vault_stored_bytes{vault="v1"}' in text
    assert api.get("/metrics", headers={"Authorization": "Bearer hvn_nope"}).status_code == 401

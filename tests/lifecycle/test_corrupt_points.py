"""A recovery point that verify found damaged is Corrupt until a later verify finds it whole (issue 16,
finding 7): shown in the API and the CLI, refused for restore up front with the fix, and Available
again once a backup stored the damaged data anew and verify read it back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from haven.cli.main import app
from tests.restore.conftest import make_vm, same_bytes
from tests.services.haven_server import HavenServer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

FINISHED_OK = ("Completed", "CompletedWithWarnings")


def cli(server: HavenServer, *args, expect: int = 0, json_out: bool = True):
    result = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, *(["-o", "json"] if json_out else []), *args],
                                env={"COLUMNS": "200"})
    assert result.exit_code == expect, (args, result.exit_code, result.output)
    return json.loads(result.stdout) if json_out and expect in (0, 1) else result.output


def _flip_one_chunk(home: Path) -> Path:
    chunks = sorted(p for p in home.rglob("*") if p.is_file() and "chunks" in p.parts)
    assert chunks, "the backup stored no chunk"
    victim = chunks[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    return victim


@pytest.fixture
def server(tmp_path, db_url):
    make_vm(tmp_path / "home" / "vms", "web1", {"vda": 3 << 20})
    srv = HavenServer(tmp_path / "home").start()
    yield srv
    srv.stop()


def test_verify_marks_a_damaged_point_corrupt_until_it_heals(server, tmp_path):
    home = server.home
    V = ["-s", "prod", "-v", "v1", "--vm", "web1"]
    cli(server, "subscription", "create", "--name", "prod")
    cli(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    cli(server, "protection", "enable-for-vm", *V)
    assert cli(server, "protection", "backup-now", *V, "--wait")["status"] in FINISHED_OK
    point = cli(server, "recoverypoint", "list", *V)[0]
    assert point["state"] == "Available"

    _flip_one_chunk(home)
    verify = cli(server, "vault", "verify", "-s", "prod", "--name", "v1", "--read-data", "--wait", expect=1)
    assert verify["status"] == "CompletedWithWarnings" and verify["result"]["points_marked_corrupt"] == [point["id"]]

    # API, CLI (JSON and table) and the point itself say so
    api = httpx.Client(base_url=f"{server.url}/api/v1/subscriptions/prod/vaults/v1/items/web1", headers={"Authorization": f"Bearer {server.token}"})
    assert [p["state"] for p in api.get("/recovery-points").json()] == ["Corrupt"]
    assert api.get(f"/recovery-points/{point['id']}").json()["state"] == "Corrupt"
    assert [p["state"] for p in cli(server, "recoverypoint", "list", *V)] == ["Corrupt"]
    assert cli(server, "recoverypoint", "show", *V, "--name", point["id"])["state"] == "Corrupt"
    assert "Corrupt" in cli(server, "recoverypoint", "list", *V, json_out=False)

    # a restore is refused up front, typed, with the way out; nothing is queued
    out = tmp_path / "restored"
    r = api.post(f"/recovery-points/{point['id']}/restore-disks", json={"target": str(out)})
    assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorRecoveryPointCorrupt", r.text
    assert "verify" in r.json()["error"]["recommendation"] and "another" in r.json()["error"]["recommendation"]
    refused = cli(server, "restore", "restore-disks", *V, "-r", point["id"], "--target-folder", str(out), expect=4, json_out=False)
    assert "UserErrorRecoveryPointCorrupt" in refused
    assert not out.exists()
    jobs = cli(server, "job", "list", "-s", "prod", "-v", "v1")
    assert not [j for j in jobs if j["operation"].startswith("Restore")]

    # heal: the next backup stores the quarantined data again; verify finds the point whole
    assert cli(server, "protection", "backup-now", *V, "--wait")["status"] in FINISHED_OK
    healed = cli(server, "vault", "verify", "-s", "prod", "--name", "v1", "--read-data", "--wait")
    assert healed["result"]["ok"] and healed["result"]["points_healed"] == [point["id"]]
    states = {p["id"]: p["state"] for p in cli(server, "recoverypoint", "list", *V)}
    assert states[point["id"]] == "Available" and set(states.values()) == {"Available"}
    assert api.get(f"/recovery-points/{point['id']}").json()["state"] == "Available"

    job = cli(server, "restore", "restore-disks", *V, "-r", point["id"], "--target-folder", str(out), "--wait")
    assert job["status"] in FINISHED_OK, job
    assert same_bytes(out / "vda.raw", home / "vms" / "web1" / "vda.raw")
    api.close()

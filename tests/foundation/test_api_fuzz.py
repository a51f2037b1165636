"""Schemathesis against the served OpenAPI document of a real ``haven serve``: at least 50 examples per
operation, zero server errors, zero responses outside the schema, every invalid request a 4xx."""

import subprocess
import sys
from pathlib import Path

import httpx

from haven.demo import make_sample_vm
from tests.services.haven_server import HavenServer


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path):
    home = tmp_path / "home"
    make_sample_vm(home / "vms", size_mib=32)
    server = HavenServer(home).start()
    try:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.url + "/api/v1", headers=auth) as api:
            assert api.post("/subscriptions", json={"name": "default"}).status_code == 201
            assert api.post("/subscriptions/default/vaults", json={"name": "vault-local", "region": "local"}).status_code == 201
            assert api.post("/subscriptions/default/vaults/vault-local/items", json={"vm": "sample-vm"}).status_code == 201
        cmd = [
            str(Path(sys.executable).with_name("schemathesis")), "run", server.url + "/openapi.json",
            "--max-examples", "50", "--seed", "20261122", "--request-timeout", "60",
            "-H", f"Authorization: Bearer {server.token}",
            # What the API promises: no 5xx, and every answer (status, headers, body) as documented.
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_headers_conformance,response_schema_conformance",
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        report = run.stdout[-8000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert " passed" in run.stdout and "failures" not in run.stdout.split("SUMMARY")[-1].lower(), report
    finally:
        server.stop()

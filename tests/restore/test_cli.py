"""restore-vm, file recovery and vault import through the CLI against real `haven serve` processes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.restore.conftest import make_vm, same_bytes
from tests.restore.test_file_recovery import nbd_servers_for
from tests.services.haven_server import HavenServer, run_cli as run

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)



@pytest.fixture
def servers(tmp_path, db_url):
    started = []

    def make(name: str) -> HavenServer:
        srv = HavenServer(tmp_path / name).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def test_restore_vm_files_and_vault_import_through_the_cli(servers, tmp_path):
    home = tmp_path / "old"
    make_vm(home / "vms", "web1", {"vda": (3 << 20) + 1024, "vdb": 0})
    old = servers("old")
    V = ["-s", "prod", "-v", "v1"]
    run(old, "subscription", "create", "--name", "prod")
    run(old, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    run(old, "protection", "enable-for-vm", *V, "--vm", "web1")
    assert run(old, "protection", "backup-now", *V, "--vm", "web1", "--wait")["status"] in ("Completed", "CompletedWithWarnings")
    point = run(old, "recoverypoint", "list", *V, "--vm", "web1")[0]["id"]

    job = run(old, "restore", "restore-vm", *V, "--vm", "web1", "-r", point, "--target-vm-name", "web1-copy", "--wait")
    assert job["status"] in ("Completed", "CompletedWithWarnings") and job["result"]["notes"]  # two NICs: said so
    assert same_bytes(home / "vms" / "web1-copy" / "vda.raw", home / "vms" / "web1" / "vda.raw")
    refused = run(old, "restore", "restore-vm", *V, "--vm", "web1", "-r", point, "--target-vm-name", "web1", expect=4)
    assert "UserErrorRestoreVmNameInUse" in refused.output and "new name" in refused.output

    mounted = run(old, "restore", "files", "mount-rp", *V, "--vm", "web1", "-r", point, "--hours", "1")
    assert mounted["status"] == "CompletedWithWarnings" and [e["disk"] for e in mounted["result"]["exports"]] == ["vda"]
    assert "empty" in json.dumps(mounted["warnings"])  # vdb has 0 bytes: nothing to export
    assert [m["session_id"] for m in run(old, "restore", "files", "list", *V, "--vm", "web1")] == [mounted["id"]]
    printed = next(line for line in mounted["result"]["instructions"] if "haven restore files unmount-rp" in line)
    unmount = shlex.split(printed.split("haven ", 1)[1])  # the unmount command runs as printed
    assert run(old, *unmount)["closed"] == [mounted["id"]]
    sock = mounted["result"]["exports"][0]["socket"]
    assert not Path(sock).exists() and nbd_servers_for(sock) == []

    vault_id = run(old, "vault", "show", "-s", "prod", "--name", "v1")["id"]
    old.stop()
    new = servers("new")
    run(new, "subscription", "create", "--name", "dr")
    imported = run(new, "vault", "import", "-s", "dr", "--storage-url", f"file://{home / 'storage' / 'local' / vault_id}",
                   "--master-key-file", str(home / "master.key"))
    assert imported["name"] == "v1" and imported["imported_recovery_points"] == 1
    target = tmp_path / "restored"
    job = run(new, "restore", "restore-disks", "-s", "dr", "-v", "v1", "--vm", "web1", "-r", point, "--target-folder", str(target), "--wait")
    assert job["status"] == "Completed", job
    assert same_bytes(target / "vda.raw", home / "vms" / "web1" / "vda.raw")
    assert same_bytes(target / "vdb.raw", home / "vms" / "web1" / "vdb.raw")

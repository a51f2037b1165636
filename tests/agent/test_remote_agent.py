"""``haven agent`` as its own process on a "remote" host, against a real ``haven serve``.

The agent reads its host's VM, sends the data through the server's storage endpoint, and the
server records the point; a restore to that host is written by the agent; an agent killed with
SIGKILL mid-backup leaves no point, the lease runs out, and the next backup completes and
verifies clean, re-sending only what had not landed.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haven.transport.client import ApiClient
from haven.errors import HavenError
from tests.foundation.helpers import make_folder_vm
from tests.services._util import start, stop
from tests.services.haven_server import HavenServer

MiB = 1 << 20
S = "/subscriptions/prod"
V = f"{S}/vaults/v1"


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "srv"
    home.mkdir()
    (home / "haven.toml").write_text("job_lease_seconds = 3.0\n")
    srv = HavenServer(home).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    client = ApiClient(server.url, server.token)
    client.post("/subscriptions", {"name": "prod"})
    client.post(f"{S}/vaults", {"name": "v1", "region": "local"})
    return client


def _add_host(server, tmp_path) -> Path:
    token_file = tmp_path / "agent" / "token"
    done = subprocess.run([sys.executable, "-m", "haven.cli.main", "-o", "json", "host", "add", "--name", "far", "--region", "local", "--share", "prod",
                           "--token-file", str(token_file)], env=server.cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert oct(token_file.stat().st_mode & 0o777) == "0o600" and "agent_token\"" not in done.stdout
    return token_file


def _start_agent(server, tmp_path, token_file, vms: Path):
    home = tmp_path / "agent"
    cmd = [sys.executable, "-m", "haven.cli.main", "agent", "--server", server.url, "--token-file", str(token_file),
           "--adapter", f"folder://{vms}", "--home", str(home)]
    return start(cmd, home / "agent.log", env={"HAVEN_HOME": str(home)})


def _wait_vm(api, name, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(v["name"] == name and v["host"] == "far" for v in api.get("/vms")):
            return
        time.sleep(0.2)
    raise AssertionError(f"the agent never reported {name}")


def _wait_job(api, job_id, timeout=180, until=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = api.get(f"{S}/jobs/{job_id}")
        if until is not None and until(job):
            return job
        if job["status"] in ("Completed", "CompletedWithWarnings", "Failed", "Cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _assert_backed_up(job) -> None:
    """A folder VM is a stopped VM: the point is crash-consistent, and the agent's warning reached the job."""
    assert job["status"] == "CompletedWithWarnings", job
    assert len(job["warnings"]) == 1 and "crash-consistent" in job["warnings"][0], job["warnings"]


def _far_vm(tmp_path, size, data) -> Path:
    vms = tmp_path / "far-vms"
    make_folder_vm(vms, "far-vm", size=size, data=data)
    return vms


def test_remote_agent_backs_up_and_restores_through_the_storage_endpoint(server, api, tmp_path):
    vms = _far_vm(tmp_path, 64 * MiB, os.urandom(8 * MiB))
    token_file = _add_host(server, tmp_path)
    agent = _start_agent(server, tmp_path, token_file, vms)
    try:
        _wait_vm(api, "far-vm")
        hosts = {h["name"]: h for h in api.get("/hosts")}
        assert hosts["far"]["agent"] == "remote" and hosts["far"]["agent_version"]
        # the readiness check shows the path the agent itself probed through the server's storage endpoint
        end = time.monotonic() + 30
        while True:  # the agent probes right after its first inventory report
            checks = {c["check"]: c for c in api.get(f"{S}/prepare/check", vm="far-vm")["checks"]}
            if checks["storage-connectivity"]["status"] != "warn" or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert checks["storage-connectivity"]["status"] == "pass", checks["storage-connectivity"]
        assert "agent of host 'far' reached" in checks["storage-connectivity"]["reason"]
        api.post(f"{V}/items", {"vm": "far-vm"})
        job = _wait_job(api, api.post(f"{V}/items/far-vm/backup", {})["id"])
        _assert_backed_up(job)
        assert [t["name"] for t in job["subtasks"]] == ["Take snapshot", "Transfer data to vault"]
        assert all(t["status"] == "Completed" for t in job["subtasks"])
        point = job["result"]["recovery_point_id"]
        assert job["result"]["bytes_stored"] >= 8 * MiB
        # the data is in the server's folder vault, written through the endpoint by the agent
        points = api.get(f"{V}/items/far-vm/recovery-points")
        assert [p["id"] for p in points] == [point] and points[0]["consistency"] == "CrashConsistent"

        # restore to the agent's host: the agent writes the disks there
        target = tmp_path / "restored"
        restore = api.post(f"{V}/items/far-vm/recovery-points/{point}/restore-disks", {"target": str(target), "host": "far"})
        restore = _wait_job(api, restore["id"])
        assert restore["status"] == "Completed", restore
        assert filecmp.cmp(vms / "far-vm" / "vda.raw", target / "vda.raw", shallow=False)
        assert (target / "vda.raw").stat().st_blocks * 512 < 32 * MiB  # holes stay holes

        # restore a new VM onto the agent's host: disks restored there, the VM defined, then reported
        made = api.post(f"{V}/items/far-vm/recovery-points/{point}/restore-vm", {"target_vm_name": "far-copy", "host": "far"})
        made = _wait_job(api, made["id"])
        assert made["status"] == "Completed" and made["result"]["host"] == "far", made
        assert filecmp.cmp(vms / "far-vm" / "vda.raw", vms / "far-copy" / "vda.raw", shallow=False)
        assert any(v["name"] == "far-copy" and v["host"] == "far" for v in api.get("/vms"))
        with pytest.raises(HavenError) as refused:
            api.post(f"{V}/items/far-vm/recovery-points/{point}/restore-vm", {"target_vm_name": "far-copy", "host": "far"})
        assert refused.value.code == "UserErrorRestoreVmNameInUse"
        with pytest.raises(HavenError) as refused:
            api.post(f"{V}/items/far-vm/recovery-points/{point}/replace-disks", {})
        assert refused.value.code == "UserErrorHostCannotRunJob" and "far" in refused.value.text

        # an incremental stores about what changed
        with open(vms / "far-vm" / "vda.raw", "r+b") as fh:
            fh.seek(40 * MiB)
            fh.write(os.urandom(MiB))
        job = _wait_job(api, api.post(f"{V}/items/far-vm/backup", {})["id"])
        _assert_backed_up(job)
        assert job["result"]["bytes_stored"] < 3 * MiB and job["result"]["parent"] == point
        # the agent polled for jobs and renewed leases many times a second: none of that is in its log
        log = (tmp_path / "agent" / "agent.log").read_text()
        assert "haven agent: host far" in log
        assert not [line for line in log.splitlines() if "/jobs/claim" in line or "/heartbeat" in line], log[-2000:]
        # nor in the server's: claims and heartbeats are not logged per request there either
        served = (server.home / "server.log").read_text()
        assert not [line for line in served.splitlines() if any(w in line.lower() for w in ("claim", "heartbeat", "/agent"))], served[-2000:]
    finally:
        stop(agent)


@pytest.fixture
def backup_under_way(server, api, tmp_path):
    """Start a remote agent's backup of a disk whose first third is a hole; ``start(data_mib, low, high)``
    returns the job id once the transfer is between ``low`` and ``high`` percent."""
    agents = []

    def start_backup(data_mib: int, low: float, high: float) -> str:
        vms = _far_vm(tmp_path, data_mib * 5 // 4 * MiB, os.urandom(data_mib * MiB))
        token_file = _add_host(server, tmp_path)
        agents.append(_start_agent(server, tmp_path, token_file, vms))
        _wait_vm(api, "far-vm")
        api.post(f"{V}/items", {"vm": "far-vm"})
        job_id = api.post(f"{V}/items/far-vm/backup", {})["id"]
        mid = _wait_job(api, job_id, until=lambda j: any(t["name"] == "Transfer data to vault" and low < t.get("percent", 0) < high
                                                         for t in j["subtasks"]))
        assert mid["status"] == "InProgress", mid
        agents.append(lambda: _start_agent(server, tmp_path, token_file, vms))
        return job_id

    yield agents, start_backup
    for agent in agents:
        if not callable(agent):
            stop(agent)


def test_agent_killed_mid_backup_records_nothing_and_the_next_backup_completes(api, backup_under_way):
    agents, start_backup = backup_under_way
    first = start_backup(256, 55, 85)  # well into the data: a good part of it has landed
    agent, restart = agents
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(10)
    dead = _wait_job(api, first, timeout=60)
    assert dead["status"] == "Failed" and dead["error"]["code"] == "JobLeaseExpired", dead
    assert api.get(f"{V}/items/far-vm/recovery-points") == []
    agents.append(restart())
    job = _wait_job(api, api.post(f"{V}/items/far-vm/backup", {})["id"])
    _assert_backed_up(job)
    assert job["result"]["bytes_stored"] < 250 * MiB, job["result"]  # what had landed before the kill is not sent again
    verify = _wait_job(api, api.post(f"{V}/verify", {"read_data": True})["id"])
    assert verify["status"] == "Completed", verify
    assert len(api.get(f"{V}/items/far-vm/recovery-points")) == 1


def test_stopping_a_remote_backup_cancels_it_cleanly(api, backup_under_way):
    _, start_backup = backup_under_way
    job_id = start_backup(512, 38, 60)
    api.post(f"{S}/jobs/{job_id}/stop")
    job = _wait_job(api, job_id, timeout=60)
    assert job["status"] == "Cancelled" and job["error"]["code"] == "UserCancelled", job
    assert api.get(f"{V}/items/far-vm/recovery-points") == []
    assert api.get(f"{V}/items/far-vm")["last_backup_status"] == "Cancelled"


def test_agent_rides_out_a_server_restart(server, api, tmp_path):
    vms = _far_vm(tmp_path, 16 * MiB, os.urandom(2 * MiB))
    token_file = _add_host(server, tmp_path)
    agent = _start_agent(server, tmp_path, token_file, vms)
    try:
        _wait_vm(api, "far-vm")
        server.stop()
        time.sleep(3)  # the agent's claims fail meanwhile; it keeps trying
        server.start()
        api = ApiClient(server.url, server.token)
        api.post(f"{V}/items", {"vm": "far-vm"})
        _assert_backed_up(_wait_job(api, api.post(f"{V}/items/far-vm/backup", {})["id"], timeout=120))
        assert agent.poll() is None
    finally:
        stop(agent)


def test_cli_rotates_an_agent_credential(server, api, tmp_path):
    old_file = _add_host(server, tmp_path)
    new_file = tmp_path / "agent" / "token.new"
    done = subprocess.run([sys.executable, "-m", "haven.cli.main", "-o", "json", "host", "rotate-token", "--name", "far",
                           "--token-file", str(new_file)], env=server.cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert oct(new_file.stat().st_mode & 0o777) == "0o600" and new_file.read_text().strip() not in done.stdout
    hello = {"adapter": "folder:///x", "version": "t", "job_types": []}
    with pytest.raises(HavenError) as refused:
        ApiClient(server.url, old_file.read_text().strip()).post("/agent/hello", hello)
    assert refused.value.code == "UserErrorTokenInvalid"
    assert ApiClient(server.url, new_file.read_text().strip()).post("/agent/hello", hello)["name"] == "far"
    hosts = subprocess.run([sys.executable, "-m", "haven.cli.main", "-o", "json", "host", "list"], env=server.cli_env(),
                           capture_output=True, text=True, timeout=60)
    assert hosts.returncode == 0 and '"far"' in hosts.stdout and '"remote"' in hosts.stdout


def test_delete_data_is_refused_while_a_remote_backup_runs(api, backup_under_way):
    """Issue 16, finding 6: with the agent's data already flowing, stop protection (delete data) is refused;
    the backup then records its point on a still protected item, and the stop is accepted afterwards."""
    _, start_backup = backup_under_way
    job_id = start_backup(128, 5, 90)
    with pytest.raises(HavenError) as refused:
        api.post(f"{V}/items/far-vm/disable", {"delete_backup_data": True})
    assert refused.value.code == "UserErrorStopProtectionJobInProgress" and job_id in refused.value.fix
    assert api.get(f"{V}/items/far-vm")["protection_state"] == "Protected"
    _assert_backed_up(_wait_job(api, job_id))
    assert [p["state"] for p in api.get(f"{V}/items/far-vm/recovery-points")] == ["Available"]
    assert api.post(f"{V}/items/far-vm/disable", {"delete_backup_data": True})["protection_state"] == "SoftDeleted"

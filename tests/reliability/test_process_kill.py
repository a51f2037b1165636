"""Crash anywhere, at the process level: ``haven serve`` killed with SIGKILL in the middle of a backup
its in-process agent runs, and killed inside the database transaction that records the point (on
SQLite and PostgreSQL). (The remote ``haven agent`` killed mid-backup: tests/agent/test_remote_agent.py.)

After the restart the interrupted job is failed by the reaper (its lease ran out), no recovery point
exists for it, the next backup completes re-sending only what had not landed, and a read-data verify
of the vault is clean."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from haven.transport.client import ApiClient, ServerUnreachable
from tests.foundation.helpers import make_folder_vm
from tests.reliability.conftest import report, size
from tests.services._util import start, stop
from tests.services.haven_server import HavenServer

MiB = 1 << 20
S = "/subscriptions/prod"
V = f"{S}/vaults/v1"


def _wait_job(api, job_id, timeout=180, until=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = api.get(f"{S}/jobs/{job_id}")
        if (until is not None and until(job)) or job["status"] in ("Completed", "CompletedWithWarnings", "Failed", "Cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _killed_job_recorded_nothing(api: ApiClient, job_id: str, vm: str, points_before: int, why=None) -> None:
    """The reaper failed the killed job (its lease ran out) and it recorded no point."""
    dead = _wait_job(api, job_id, timeout=60)
    assert dead["status"] == "Failed" and dead["error"]["code"] == "JobLeaseExpired", (why, dead)
    assert len(api.get(f"{V}/items/{vm}/recovery-points")) == points_before, why


def _backup_then_verify(api: ApiClient, vm: str) -> dict:
    """The next backup completes and a read-data verify of the vault is clean; returns the backup job."""
    job = _wait_job(api, api.post(f"{V}/items/{vm}/backup", {})["id"])
    assert job["status"] in ("Completed", "CompletedWithWarnings"), job
    verify = _wait_job(api, api.post(f"{V}/verify", {"read_data": True})["id"])
    assert verify["status"] == "Completed", verify
    return job


def _kill_world(tmp_path, server_module: str = "haven.cli.main", **server_options):
    """A server home with a 3-second job lease (the reaper settles a killed job fast), and its server, not started."""
    home = tmp_path / "srv"
    (home / "vms").mkdir(parents=True)
    (home / "haven.toml").write_text("job_lease_seconds = 3.0\n")
    return home, HavenServer(home, module=server_module, **server_options)


def _first_vault(api: ApiClient) -> None:
    api.post("/subscriptions", {"name": "prod"})
    api.post(f"{S}/vaults", {"name": "v1", "region": "local"})


def test_server_killed_mid_backup(tmp_path):
    home, server = _kill_world(tmp_path)
    data_size = 384 * MiB  # long enough that progress, written at most once a second, shows it mid-way
    make_folder_vm(home / "vms", "big", size=448 * MiB, data=os.urandom(data_size))
    server.start()
    try:
        api = ApiClient(server.url, server.token)
        _first_vault(api)
        api.post(f"{V}/items", {"vm": "big"})
        first = api.post(f"{V}/items/big/backup", {})["id"]
        mid = _wait_job(api, first, until=lambda j: any(t["name"] == "Transfer data to vault" and 20 < t.get("percent", 0) < 90
                                                          for t in j["subtasks"]))
        assert mid["status"] == "InProgress", mid
        killed_at = next(t["percent"] for t in mid["subtasks"] if t["name"] == "Transfer data to vault")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        server.start()
        api = ApiClient(server.url, server.token)
        _killed_job_recorded_nothing(api, first, "big", 0)
        job = _backup_then_verify(api, "big")
        resent = job["result"]["bytes_stored"]
        # what landed before the kill is not sent again: at most what was left, and what was in flight
        assert resent < data_size * (1 - killed_at / 100 + 0.15), (killed_at, job["result"])
        assert len(api.get(f"{V}/items/big/recovery-points")) == 1
        report("server_kill", killed_at_percent=killed_at, data_mib=data_size // MiB, resent_mib=round(resent / MiB, 1),
               interrupted_point_recorded=0, verify="clean")
    finally:
        server.stop()


def test_server_killed_while_recording_the_point(tmp_path, db_url):
    home, server = _kill_world(tmp_path, "tests.reliability._dying", database_url=db_url,
                               env={"HAVEN_DIE_RECORDING_POINT": "1", "HAVEN_DIED_FILE": str(tmp_path / "died.json")})
    make_folder_vm(home / "vms", "small", size=16 * MiB, data=os.urandom(4 * MiB))
    server.start()
    try:
        api = ApiClient(server.url, server.token)
        _first_vault(api)
        api.post(f"{V}/items", {"vm": "small"})
        first = api.post(f"{V}/items/small/backup", {})["id"]
        assert server.proc.wait(120) == -signal.SIGKILL  # died with the point row flushed, not committed
        server.env["HAVEN_DIE_RECORDING_POINT"] = "0"
        server.start()
        api = ApiClient(server.url, server.token)
        _killed_job_recorded_nothing(api, first, "small", 0)
        job = _backup_then_verify(api, "small")
        points = api.get(f"{V}/items/small/recovery-points")
        assert [p["id"] for p in points] == [job["result"]["recovery_point_id"]]
        report("server_kill_recording", db=db_url.split(":", 1)[0], point_rows_after_kill=0, verify="clean")
    finally:
        server.stop()


class _Agent:
    """A remote ``haven agent`` process (through ``_dying``), restartable with changed settings."""

    def __init__(self, server: HavenServer, home: Path, token_file: Path, vms: Path):
        self.home, self.env, self.proc = home, {"HAVEN_HOME": str(home)}, None
        self.cmd = [sys.executable, "-m", "tests.reliability._dying", "agent", "--server", server.url,
                    "--token-file", str(token_file), "--adapter", f"folder://{vms}", "--home", str(home)]

    def start(self) -> None:
        self.proc = start(self.cmd, self.home / "agent.log", env=self.env)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def _kill_rounds(victim, api: ApiClient, disk: Path, died_file: Path, rng: random.Random, last_step: str) -> dict:
    """Per round: new data on the VM's disk; ``victim`` (server or agent) armed to die before (or
    half-way through) the n-th object the backup writes, or at ``last_step``; one backup; then,
    unarmed: the job failed by the reaper with no point, the next backup records exactly one point,
    read-data verify clean."""
    figures: dict = {"killed": 0, "not_reached": 0, "verify_clean": 0, "points_recorded_by_killed": 0}
    phases: dict[str, int] = {}
    disarmed = {"HAVEN_DIE_AT_STORE": "0", last_step: "0", "HAVEN_DIE_HALF_WRITTEN": "0"}
    for _ in range(size("server_kill_points")):
        with open(disk, "r+b") as fh:  # new data: the backup has chunks to write
            fh.seek(rng.randrange(0, 24 * MiB))
            fh.write(rng.randbytes(6 * MiB))
        at_end = rng.random() < 0.15
        victim.stop()
        victim.env.update({"HAVEN_DIE_AT_STORE": "0" if at_end else str(rng.randint(1, 9)), last_step: "1" if at_end else "0",
                           "HAVEN_DIE_HALF_WRITTEN": "1" if rng.random() < 0.5 else "0", "HAVEN_DIED_FILE": str(died_file)})
        died_file.unlink(missing_ok=True)
        victim.start()
        before = len(api.get(f"{V}/items/vm1/recovery-points"))
        job_id = api.post(f"{V}/items/vm1/backup", {})["id"]
        end = time.monotonic() + 120
        while victim.proc.poll() is None:
            assert time.monotonic() < end, "the armed process neither died nor finished"
            try:
                if api.get(f"{S}/jobs/{job_id}")["status"] not in ("Queued", "InProgress"):
                    break
            except ServerUnreachable:  # dying under our request
                pass
            time.sleep(0.05)
        time.sleep(0.2)
        victim.env.update(disarmed)
        if victim.proc.poll() is None:  # the point fell after this backup's last write: it completed
            assert _wait_job(api, job_id)["status"] in ("Completed", "CompletedWithWarnings")
            figures["not_reached"] += 1
            before += 1
            victim.stop()
            victim.start()
        else:
            died = json.loads(died_file.read_text())
            figures["killed"] += 1
            phases[died["phase"]] = phases.get(died["phase"], 0) + 1
            victim.start()
            _killed_job_recorded_nothing(api, job_id, "vm1", before, died)
        _backup_then_verify(api, "vm1")
        assert len(api.get(f"{V}/items/vm1/recovery-points")) == before + 1
        figures["verify_clean"] += 1
    assert figures["killed"] >= 1
    return {**figures, "phases": ",".join(f"{k}:{v}" for k, v in sorted(phases.items()))}


def test_server_killed_at_seeded_random_points(tmp_path):
    """``haven serve`` killed before or half-way through the n-th object a backup writes (its lock,
    a chunk, the manifest) or inside the database commit, at seeded random points."""
    home, server = _kill_world(tmp_path, "tests.reliability._dying")
    disk = make_folder_vm(home / "vms", "vm1", size=32 * MiB, data=os.urandom(8 * MiB)) / "vda.raw"
    server.start()
    try:
        api = ApiClient(server.url, server.token)
        _first_vault(api)
        api.post(f"{V}/items", {"vm": "vm1"})
        figures = _kill_rounds(server, api, disk, tmp_path / "died.json", random.Random(20261202), "HAVEN_DIE_RECORDING_POINT")
    finally:
        server.stop()
    report("server_kill_points", **figures)


def test_agent_killed_at_seeded_random_points(tmp_path):
    """A remote ``haven agent`` killed before the n-th object it sends through the storage endpoint
    (its lock, a chunk, the manifest) or with everything stored but before it reports the backup done."""
    home, server = _kill_world(tmp_path)
    vms = tmp_path / "far-vms"
    disk = make_folder_vm(vms, "vm1", size=32 * MiB, data=os.urandom(8 * MiB)) / "vda.raw"
    server.start()
    agent = None
    try:
        api = ApiClient(server.url, server.token)
        _first_vault(api)
        token_file = tmp_path / "agent" / "token"
        token_file.parent.mkdir()
        token_file.write_text(api.post("/hosts", {"name": "far", "region": "local", "shares": ["prod"]})["agent_token"])
        agent = _Agent(server, tmp_path / "agent", token_file, vms)
        agent.start()
        end = time.monotonic() + 60
        while not any(v["name"] == "vm1" and v["host"] == "far" for v in api.get("/vms")):
            assert time.monotonic() < end, "the agent never reported its VM"
            time.sleep(0.2)
        api.post(f"{V}/items", {"vm": "vm1"})
        figures = _kill_rounds(agent, api, disk, tmp_path / "died.json", random.Random(20261203), "HAVEN_DIE_BEFORE_REPORT")
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
    report("agent_kill_points", **figures)


def _kill_postgresql_under(api: ApiClient, server: HavenServer, pg, flag: Path, home: Path, when: str) -> dict:
    """One round: a backup; PostgreSQL SIGKILLed (postmaster and every backend) ``when`` it is
    "recording" (the server holds the point's transaction, rows flushed, not committed) or
    "transferring" (data going to the vault, progress being written); PostgreSQL restarted. The job
    ends either recorded with its data stored, or failed typed with no point; the server (never
    restarted) goes on: the next backup records exactly one point, read-data verify clean."""
    before = len(api.get(f"{V}/items/small/recovery-points"))
    server.stop()
    server.env["HAVEN_PAUSE_RECORDING_POINT"] = str(flag) if when == "recording" else ""
    server.start()
    api = ApiClient(server.url, server.token)
    job_id = api.post(f"{V}/items/small/backup", {})["id"]
    if when == "recording":
        end = time.monotonic() + 120
        while not flag.exists():
            assert time.monotonic() < end and server.proc.poll() is None, "the backup never reached the database commit"
            time.sleep(0.05)
    else:
        _wait_job(api, job_id, until=lambda j: any(t["name"] == "Transfer data to vault" and t.get("percent", 0) >= 20 for t in j["subtasks"]))
    killed = pg.kill()
    time.sleep(1)
    pg.restart()
    flag.unlink(missing_ok=True)  # the server goes on, on connections whose backends are gone
    job = _wait_job(api, job_id, timeout=120)
    points = api.get(f"{V}/items/small/recovery-points")
    if job["status"] in ("Completed", "CompletedWithWarnings"):
        assert when == "transferring" and len(points) == before + 1, (job, points)
    else:
        assert job["status"] == "Failed" and job["error"]["code"] in ("TransientErrorDatabaseUnavailable", "JobLeaseExpired"), job
        assert len(points) == before, points
    assert server.proc.poll() is None, "the server died with the database"
    ok = _backup_then_verify(api, "small")
    points = api.get(f"{V}/items/small/recovery-points")
    assert ok["result"]["recovery_point_id"] in {p["id"] for p in points}
    for p in points:
        assert len(list((home / "storage").glob(f"*/*/points/*/{p['id']}"))) == 1, f"point {p['id']} has no manifest in storage"
    return {"killed": killed, "outcome": job["status"] if job["status"] != "Failed" else job["error"]["code"]}


def test_postgresql_killed_under_a_backup(tmp_path):
    """PostgreSQL itself killed at seeded rounds, alternately while a point is being recorded and
    while a backup transfers data (see ``_kill_postgresql_under``)."""
    from tests.services.postgres import PostgresServer

    pg = PostgresServer().start()
    server = None
    outcomes: dict[str, int] = {}
    try:
        home, server = _kill_world(tmp_path, "tests.reliability._dying", database_url=pg.create_database("haven"))
        disk = make_folder_vm(home / "vms", "small", size=64 * MiB, data=os.urandom(4 * MiB)) / "vda.raw"
        server.start()
        api = ApiClient(server.url, server.token)
        _first_vault(api)
        api.post(f"{V}/items", {"vm": "small"})
        rng, processes = random.Random(20261204), 0
        rounds = 2 * size("db_kill_points")
        for i in range(rounds):
            with open(disk, "r+b") as fh:  # new data for every backup
                fh.seek(rng.randrange(0, 32 * MiB))
                fh.write(rng.randbytes(24 * MiB))
            when = ("recording", "transferring")[i % 2]
            r = _kill_postgresql_under(api, server, pg, tmp_path / "recording.flag", home, when)
            processes += r["killed"]
            key = f"{when}:{r['outcome']}"
            outcomes[key] = outcomes.get(key, 0) + 1
    finally:
        if server is not None:
            server.stop()
        pg.stop()
    report("postgresql_kill", rounds=rounds, processes_killed=processes, points_without_data=0, verify="clean",
           outcomes=",".join(f"{k}:{v}" for k, v in sorted(outcomes.items())))

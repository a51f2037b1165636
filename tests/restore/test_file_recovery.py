"""File recovery: a recovery point's disks as read-only NBD exports, read with libnbd and debugfs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from haven.demo import make_sample_vm
from haven.services.restore import FileRecoverySessionNotFound, MountDurationInvalid
from tests.foundation.helpers import register_local_host
from tests.services._util import require, require_binary


def _setup(world):
    world.core.subscriptions.create(world.owner, "prod")
    world.core.vaults.create(world.owner, "prod", "v1", "local", "LRS")
    make_sample_vm(world.vms, "sample", size_mib=48)
    register_local_host(world.core, world.vms)
    world.core.protection.enable(world.owner, "prod", "v1", "sample")
    world.backup("sample")
    return world.points("sample")[0]


def nbd_servers_for(socket: str) -> list[int]:
    """Pids of processes still serving ``socket`` (none may survive an unmount or an expiry)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if socket.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _read_export(uri: str, dest: Path) -> int:
    import nbd

    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        assert h.is_read_only()
        size = h.get_size()
        with open(dest, "wb") as fh:
            step = 4 << 20
            for off in range(0, size, step):
                fh.write(h.pread(min(step, size - off), off))
        return size
    finally:
        h.shutdown()


#: file recovery does not depend on the metadata store: SQLite covers it
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_mount_rp_serves_the_disk_read_only_and_a_file_reads_back(world, tmp_path):
    require_binary("qemu-nbd")
    require_binary("debugfs")
    try:
        import nbd  # noqa: F401
    except ImportError:
        require(False, "python3-libnbd (import nbd)")
    point = _setup(world)
    job = world.ok(world.core.restore.mount(world.owner, "prod", "v1", "sample", point["id"]))
    result = job["result"]
    try:
        assert any("nbd-client" in line for line in result["instructions"])
        assert any("unmount-rp" in line for line in result["instructions"])
        export = result["exports"][0]
        assert export["disk"] == "vda" and export["uri"].startswith("nbd+unix:///vda?socket=")
        mounts = world.core.restore.list_mounts(world.owner, "prod", "v1", "sample")
        assert [m["session_id"] for m in mounts] == [result["session_id"]]
        expires = result["expires_at"]
        assert expires.startswith("2026-11-02T21:00")  # 12 hours by default (the fake clock says 09:00)
        disk = tmp_path / "vda.img"
        size = _read_export(export["uri"], disk)
        assert size == 48 << 20
        out = subprocess.run(["debugfs", "-R", "cat /home/notes.txt", str(disk)], capture_output=True, text=True)
        assert "this file must survive backup and restore" in out.stdout
        original = subprocess.run(["debugfs", "-R", "cat /home/notes.txt", str(world.vms / "sample" / "vda.raw")],
                                  capture_output=True, text=True)
        assert out.stdout == original.stdout
    finally:
        closed = world.core.restore.unmount(world.owner, "prod", "v1", "sample", point["id"])
    assert closed["closed"] == [result["session_id"]]
    assert not Path(export["socket"]).exists() and nbd_servers_for(export["socket"]) == []
    assert not (world.home / "file-recovery" / result["session_id"]).exists()
    with pytest.raises(FileRecoverySessionNotFound):
        world.core.restore.unmount(world.owner, "prod", "v1", "sample", point["id"])


def test_a_mount_closes_by_itself_when_its_time_is_up(world):
    require_binary("qemu-nbd")
    point = _setup(world)
    with pytest.raises(MountDurationInvalid):
        world.core.restore.mount(world.owner, "prod", "v1", "sample", point["id"], hours=1000)
    job = world.ok(world.core.restore.mount(world.owner, "prod", "v1", "sample", point["id"], hours=1.5 / 3600))
    sock = Path(job["result"]["exports"][0]["socket"])
    scratch = world.home / "file-recovery" / job["result"]["session_id"]
    assert sock.exists()
    end = time.monotonic() + 20
    while time.monotonic() < end and scratch.exists():
        time.sleep(0.1)
    assert not scratch.exists() and not sock.exists() and nbd_servers_for(str(sock)) == []
    assert world.core.restore.list_mounts(world.owner, "prod", "v1", "sample") == []

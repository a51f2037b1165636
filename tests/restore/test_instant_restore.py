"""Instant restore of a libvirt VM (issue 22, first slice), on the project's real test guest under a real
libvirtd, driven through the CLI against a real ``haven serve`` whose own host agent runs ``qemu:///system``.

A file written in the running guest through its guest agent is backed up; the point is instant-restored next
to the running original and the file is read back through the NEW VM's guest agent while its disk is a qcow2
overlay over nbdkit (the vault, on demand). ``commit`` moves it to local disks under the running VM (same
domain id, a write made before the commit still there): the overlay has no backing file any more and nbdkit
is gone. ``discard`` leaves nothing: no domain, no file, no process, no session. Typed errors: the name of a
VM that exists, a point that does not, a VM name with no instant session, and nbdkit's plugin missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from haven.work.instant import nbdkit_problem
from tests.hypervisor.conftest import guest_images  # noqa: F401 - the fixture
from tests.hypervisor.test_real_guest import DOMAIN, V, _server, guest, libvirtd  # noqa: F401 - fixtures
from tests.services._util import require
from tests.services.haven_server import HavenServer, run_cli as run

NEW = "haven-instant1"


def _agent(dom, timeout: float = 180.0):
    from haven.hypervisor.libvirt_agent import LibvirtGuestAgent

    end = time.monotonic() + timeout
    while True:
        try:
            return LibvirtGuestAgent(dom, timeout=30, connect_timeout=5)
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def _read(dom, path: str) -> str:
    res = _agent(dom).shell(f"cat {path}", timeout=60)
    assert res.ok, res.stderr
    return res.stdout


def _backing(overlay: str) -> str | None:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", overlay], check=True,
                                     capture_output=True, text=True).stdout)
    return info.get("backing-filename")


def _is_nbdkit(pid: int) -> bool:
    try:
        return b"nbdkit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _leave_nothing(home: Path, conn) -> None:
    """After a failure: the VM, nbdkit and the files of the instant restore go (the product's discard, then by hand)."""
    import libvirt

    from haven.hypervisor.libvirt_adapter import LibvirtAdapter
    from haven.work.instant import discard_instant, load_session

    session = load_session(home / "instant", NEW)
    if session is not None:
        adapter = LibvirtAdapter("qemu:///system")
        try:
            discard_instant(adapter, session)
        finally:
            adapter.close()
    try:
        d = conn.lookupByName(NEW)
        if d.isActive():
            d.destroy()
        d.undefine()
    except libvirt.libvirtError:
        pass


@pytest.fixture
def target_root():
    root = Path(tempfile.mkdtemp(prefix="haven-ir-", dir="/var/tmp"))
    os.chmod(root, 0o755)  # QEMU's user reaches the VM's folder inside
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.vm
@pytest.mark.libvirt
def test_instant_restore_commit_and_discard(guest, tmp_path, target_root):
    import libvirt

    require(nbdkit_problem() is None, f"instant restore: {nbdkit_problem()} (run scripts/setup-system.sh)")
    home = tmp_path / "home"
    server = _server(home)
    conn = libvirt.open("qemu:///system")
    try:
        run(server, "subscription", "create", "--name", "prod")
        run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
        run(server, "protection", "enable-for-vm", *V, "--vm", DOMAIN)
        content = os.urandom(16).hex()
        guest.shell(f"echo {content} > /root/haven-instant.txt && sync")
        backup = run(server, "protection", "backup-now", *V, "--vm", DOMAIN, "--wait")
        assert backup["status"] in ("Completed", "CompletedWithWarnings"), backup
        point = run(server, "recoverypoint", "list", *V, "--vm", DOMAIN)[0]["id"]
        guest.shell("rm -f /root/haven-instant.txt && sync")  # the original no longer has it: the new VM reads the point's
        rp = [*V, "--vm", DOMAIN, "--rp-name", point, "--target-folder", str(target_root)]

        # typed refusals, nothing started
        taken = run(server, "restore", "instant", *rp, "--target-vm-name", DOMAIN, expect=4)
        assert "UserErrorInstantRestoreNameInUse" in taken.output and f"--target-vm-name {DOMAIN}-instant" in taken.output
        missing = run(server, "restore", "instant", *V, "--vm", DOMAIN, "--rp-name", "0" * 32, "--target-vm-name", NEW, expect=3)
        assert "UserErrorRecoveryPointNotFound" in missing.output
        nosession = run(server, "restore", "instant", "commit", "-s", "prod", "--target-vm-name", NEW, expect=3)
        assert "UserErrorInstantRestoreNotFound" in nosession.output
        assert not list(target_root.iterdir()) and NEW not in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains()]

        # instant restore next to the running original
        started = time.monotonic()
        job = run(server, "restore", "instant", *rp, "--target-vm-name", NEW, "--wait")
        assert job["status"] == "Completed", job
        result = job["result"]
        overlay, pid = result["disks"]["vda"], result["nbd_server_pid"]
        dom = conn.lookupByName(NEW)
        assert dom.isActive() and conn.lookupByName(DOMAIN).isActive()
        assert Path(overlay).parent == target_root / NEW
        assert (_backing(overlay) or "").startswith("nbd+unix://"), _backing(overlay)
        assert _is_nbdkit(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        keyfile = next(a for a in cmdline if a.startswith(b"keyfile=")).split(b"=", 1)[1].decode()
        assert not os.path.exists(keyfile)  # the vault's keys were read once and removed, never on the command line
        assert _read(dom, "/root/haven-instant.txt") == f"{content}\n"  # through the new VM's agent, before any commit
        print(f"instant restore: guest agent answered after {time.monotonic() - started:.1f} s")
        assert _agent(dom).shell("echo before > /root/before.txt && sync").ok
        dom_id = dom.ID()
        # the guest writes all through the commit: one numbered line at a time, each synced, until told to stop
        assert _agent(dom).shell("sh -c 'i=0; while [ ! -e /root/stop ]; do echo $i >> /root/during.log; sync; "
                                 "i=$((i+1)); done; touch /root/stopped' </dev/null >/dev/null 2>&1 &").ok
        lines = lambda: int(_agent(dom).shell("cat /root/during.log 2>/dev/null | wc -l").stdout.strip() or 0)  # noqa: E731

        # commit under the running, writing VM
        at_start = lines()
        committed = run(server, "restore", "instant", "commit", "-s", "prod", "--target-vm-name", NEW, "--wait")
        assert committed["status"] == "Completed", committed
        assert lines() > at_start  # the guest wrote while the commit ran
        assert _agent(dom).shell("touch /root/stop; while [ ! -e /root/stopped ]; do sleep 0.1; done; sync").ok
        assert committed["result"]["nbd_server_running"] is False
        assert any(t["name"] == "Move disk vda to local storage" and t.get("percent") == 100 for t in committed["subtasks"])
        assert dom.isActive() and dom.ID() == dom_id  # never stopped
        assert _backing(overlay) is None
        assert not _is_nbdkit(pid)
        assert "nbd" not in conn.lookupByName(NEW).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # its next start too
        assert _agent(dom).shell("echo 3 > /proc/sys/vm/drop_caches").ok  # what follows is read from the disk: the overlay alone
        assert _read(dom, "/root/haven-instant.txt") == f"{content}\n" and _read(dom, "/root/before.txt") == "before\n"
        written = _read(dom, "/root/during.log").split()
        assert written == [str(i) for i in range(len(written))] and len(written) > at_start

        # discard: nothing left
        record = json.loads((home / "instant" / f"{NEW}.json").read_text())
        gone = run(server, "restore", "instant", "discard", "-s", "prod", "--target-vm-name", NEW, "--wait")
        assert gone["status"] == "Completed", gone
        assert NEW not in [d.name() for d in conn.listAllDomains()]
        assert not (target_root / NEW).exists() and not Path(record["sockets"]).exists()
        assert not (home / "instant" / f"{NEW}.json").exists() and not list(target_root.iterdir())
        assert not _is_nbdkit(pid)
        again = run(server, "restore", "instant", "discard", "-s", "prod", "--target-vm-name", NEW, expect=3)
        assert "UserErrorInstantRestoreNotFound" in again.output
    finally:
        server.stop()
        _leave_nothing(home, conn)
        conn.close()

    # nbdkit's Python plugin missing on the host: refused, typed, with the command that installs it
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nbdkit").write_text("#!/bin/sh\necho 'nbdkit: error: cannot open plugin python' >&2\nexit 1\n")
    (fake / "nbdkit").chmod(0o755)
    bare = HavenServer(home, env={"HAVEN_HYPERVISORS": f"folder://{home / 'vms'} qemu:///system",
                                  "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}).start()
    try:
        refused = run(bare, "restore", "instant", *rp, "--target-vm-name", NEW, expect=7)
        assert "UserErrorInstantRestoreToolMissing" in refused.output and "apt-get install -y nbdkit nbdkit-plugin-python" in refused.output
        assert not list(target_root.iterdir()) and NEW not in [d.name() for d in libvirt.open("qemu:///system").listAllDomains()]
    finally:
        bare.stop()


def test_the_nbd_server_serves_the_point_byte_for_byte(tmp_path):
    """nbdkit with Haven's plugin serves each disk of a point exactly (holes as holes), from keys it read once
    from a file that is gone when it answers; keys of another vault do not open the vault."""
    from haven.engine import LocalKeyWrapper, Repository
    from haven.engine.urls import open_backend
    from haven.hypervisor.sources import FileDiskSource
    from haven.work.instant import _start_server, _stop_server
    from haven.work.instant_errors import InstantServerFailed
    from haven.work.instant_repo import key_document

    require(nbdkit_problem() is None, f"instant restore: {nbdkit_problem()} (run scripts/setup-system.sh)")
    size = 48 << 20
    disks = {}
    for name, spots in (("vda", (0, 5 << 20, size - 4096)), ("vdb", (17 << 20,))):
        path = tmp_path / f"{name}.raw"
        with open(path, "wb") as fh:
            fh.truncate(size)
            for at in spots:
                fh.seek(at)
                fh.write(os.urandom(4096))
        disks[name] = path
    url = f"file://{tmp_path / 'vault'}"
    repo = Repository.init(open_backend(url), LocalKeyWrapper(os.urandom(32)), {"name": "instant"})
    repo.backup("item", "point", [FileDiskSource(n, p) for n, p in disks.items()], {"vm": "x"})
    sockets = Path(tempfile.mkdtemp(prefix="haven-irt-"))
    try:
        pid, sock = _start_server(key_document(repo, url, {}, None, "item", "point", list(disks)), sockets, tmp_path / "nbdkit.log")
        try:
            keyfile = next(a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a.startswith(b"keyfile="))
            assert not os.path.exists(keyfile.split(b"=", 1)[1])
            for name, path in disks.items():
                out = tmp_path / f"{name}.served"
                subprocess.run(["qemu-img", "convert", "-O", "raw", f"nbd+unix:///{name}?socket={sock}", str(out)], check=True)
                assert out.read_bytes() == path.read_bytes(), name
            holes = json.loads(subprocess.run(["qemu-img", "map", "--output=json", f"nbd+unix:///vdb?socket={sock}"],
                                              check=True, capture_output=True, text=True).stdout)
            assert sum(e["length"] for e in holes if e["data"]) == repo.chunk_size  # one chunk of data, the rest holes
        finally:
            _stop_server(pid)
        assert not _is_nbdkit(pid)
        other = Repository.init(open_backend(f"file://{tmp_path / 'other'}"), LocalKeyWrapper(os.urandom(32)), {"name": "o"})
        wrong = {**key_document(repo, url, {}, None, "item", "point", ["vda"]),
                 "keys": key_document(other, url, {}, None, "item", "point", ["vda"])["keys"]}
        with pytest.raises(InstantServerFailed):
            _start_server(wrong, sockets, tmp_path / "nbdkit-wrong.log")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)

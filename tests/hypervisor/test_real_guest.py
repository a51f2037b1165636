"""The seeds' first steps on a real guest: the test guest under libvirt (qemu-guest-agent 7.x answering), driven
through the CLI alone against a real ``haven serve`` whose own host agent runs ``qemu:///system``.

No guest fact is given by hand: the server's host agent probes the guest agent (``guest-info``,
``guest-get-osinfo``, the extension's manifest). ``prepare check`` passes; it fails typed when the real agent
reports an unsupported OS (an ``/etc/os-release`` written into the guest through the agent, removed after) and
when the configured minimum version is above the real agent's; ``vm list`` shows the real version; two backups,
and a file written in the guest between them is read back from the restored disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.services.haven_server import HavenServer, run_cli as run

from .conftest import testvm
from .test_libvirt import domain_xml

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]

DOMAIN = "haven-real-guest1"
OLD_OS = 'ID=mswindows\nNAME="Microsoft Windows"\nPRETTY_NAME="Windows Server 2003 R2 Standard"\nVERSION_ID=2003r2\n'
V = ["-s", "prod", "-v", "v1"]


@pytest.fixture(scope="module")
def libvirtd():
    from tests.services import libvirtd as svc
    from tests.services._util import require

    ok, why = svc.available()
    require(ok, why)
    daemon = svc.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def guest(libvirtd, guest_images):
    import libvirt

    from haven.hypervisor.libvirt_agent import LibvirtGuestAgent

    work = Path(tempfile.mkdtemp(prefix="haven-real-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    conn = libvirt.open("qemu:///system")

    def drop():
        try:
            d = conn.lookupByName(DOMAIN)
        except libvirt.libvirtError:
            return
        if d.isActive():
            d.destroy()
        for cp in d.listAllCheckpoints():
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)

    drop()
    disk = testvm.new_disk(guest_images, work / "vda.qcow2")
    dom = conn.defineXML(domain_xml(DOMAIN, guest_images, disk, work / "console.log"))
    dom.create()
    end = time.monotonic() + 180
    while True:
        try:
            LibvirtGuestAgent(dom, timeout=10, connect_timeout=5)
            break
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(1)

    def shell(script: str) -> str:
        res = LibvirtGuestAgent(dom, timeout=60).shell(script, timeout=120)
        assert res.ok, res.stderr
        return res.stdout

    try:
        yield shell
    finally:
        drop()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)


def _server(home: Path, **env: str) -> HavenServer:
    return HavenServer(home, env={"HAVEN_HYPERVISORS": f"folder://{home / 'vms'} qemu:///system", **env}).start()


def _vm(server: HavenServer) -> dict:
    return next(v for v in run(server, "vm", "list") if v["name"] == DOMAIN)


def _checks(result) -> dict:
    import json

    body = result if isinstance(result, dict) else json.loads(result.stdout)
    return {c["check"]: c for c in body["checks"]}


def _read_back(target: Path, path: str, tmp: Path) -> bytes | None:
    disk = next(target.glob("vda.*"))
    raw = tmp / "vda-restored.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    return testvm.fs_cat(raw, path)


def test_real_guest_through_the_cli(guest, tmp_path):
    home = tmp_path / "home"
    server = _server(home)
    try:
        vm = _vm(server)  # probed by the server's own host agent at its start
        ga = vm["guest_agent"]
        assert vm["power_state"] == "running" and ga["answering"] is True and ga["version"].startswith("7."), vm
        assert ga["version_ok"] is True and ga["minimum_version"] == "2.10.0" and ga["checked_at"]

        run(server, "subscription", "create", "--name", "prod")
        run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
        ok = _checks(run(server, "prepare", "check", "-s", "prod", "--vm", DOMAIN))
        assert ok["guest-agent"]["status"] == "pass" and ga["version"] in ok["guest-agent"]["reason"], ok["guest-agent"]
        assert ok["guest-agent-version"]["status"] == "pass" and ok["backup-extension"]["status"] == "pass"
        assert ok["support:guest-os"]["status"] == "pass"

        # the real agent reports an OS older than Windows Server 2008 R2: refused, typed, then fine again
        guest(f"printf '%s' '{OLD_OS}' > /etc/os-release && sync")
        try:
            bad = run(server, "prepare", "check", "-s", "prod", "--vm", DOMAIN, expect=7)
            o = _checks(run(server, "-o", "json", "prepare", "check", "-s", "prod", "--vm", DOMAIN, expect=7))["support:guest-os"]
            assert "UserErrorGuestOsUnsupported" in bad.output
            assert o["status"] == "fail" and "Windows Server 2003 R2" in o["reason"] and "Upgrade the guest" in o["fix"]
            refused = run(server, "protection", "enable-for-vm", *V, "--vm", DOMAIN, expect=7)
            assert "UserErrorGuestOsUnsupported" in refused.output
        finally:
            guest("rm -f /etc/os-release && sync")
        assert _checks(run(server, "prepare", "check", "-s", "prod", "--vm", DOMAIN))["support:guest-os"]["status"] == "pass"

        run(server, "protection", "enable-for-vm", *V, "--vm", DOMAIN)
        first = run(server, "protection", "backup-now", *V, "--vm", DOMAIN, "--wait")
        assert first["status"] in ("Completed", "CompletedWithWarnings"), first
        content = os.urandom(16).hex()
        guest(f"echo {content} > /root/haven-real.txt && sync")
        second = run(server, "protection", "backup-now", *V, "--vm", DOMAIN, "--wait")
        assert second["status"] in ("Completed", "CompletedWithWarnings"), second
        points = run(server, "recoverypoint", "list", *V, "--vm", DOMAIN)
        assert len(points) == 2 and all(p["consistency"] != "CrashConsistent" for p in points), points
        newest = max(points, key=lambda p: p["time"])["id"]
        target = tmp_path / "restored"
        job = run(server, "restore", "restore-disks", *V, "--vm", DOMAIN, "-r", newest, "--target-folder", str(target), "--wait")
        assert job["status"] == "Completed", job
        assert _read_back(target, "/root/haven-real.txt", tmp_path) == f"{content}\n".encode()
        ext = _vm(server)["guest_agent"]["extension"]
        assert ext and ext["status"] in ("installed", "current", "upgraded"), ext  # put in by the first backup
    finally:
        server.stop()

    # the one configured minimum above the real agent's version: every surface refuses, typed
    strict = _server(home, HAVEN_MIN_GUEST_AGENT_VERSION="99.0")
    try:
        vm = _vm(strict)
        assert vm["guest_agent"]["version_ok"] is False and vm["guest_agent"]["minimum_version"] == "99.0"
        bad = run(strict, "-o", "json", "prepare", "check", "-s", "prod", "--vm", DOMAIN, expect=7)
        v = _checks(bad)["guest-agent-version"]
        assert v["status"] == "fail" and v["code"] == "UserErrorGuestAgentVersionUnsupported" and "99.0" in v["reason"]
    finally:
        strict.stop()

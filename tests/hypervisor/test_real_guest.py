"""The seeds' first steps on a real guest: the test guest under libvirt (qemu-guest-agent 7.x answering), driven
through the CLI alone against a real ``haven serve`` whose own host agent runs ``qemu:///system``.

No guest fact is given by hand: the server's host agent probes the guest agent (``guest-info``,
``guest-get-osinfo``, the extension's manifest). ``prepare check`` passes; it fails typed when the real agent
reports an unsupported OS (an ``/etc/os-release`` written into the guest through the agent, removed after) and
when the configured minimum version is above the real agent's; ``vm list`` shows the real version; two backups,
and a file written in the guest between them is read back from the restored disk; ``restore-vm`` of the newest
point makes a new VM with a clean definition that starts next to the running original and reads the file back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.services.haven_server import HavenServer, run_cli as run

from tests.services.guest_domain import domain_xml

from .conftest import testvm

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]

DOMAIN = "haven-real-guest1"
RESTORED = DOMAIN + "-restored"
URI = "qemu:///system"
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


@dataclass
class Guest:
    shell: Callable[[str], str]  # sh -c in the guest through its agent; its stdout
    conn: Any  # libvirt.virConnect on qemu:///system
    work: Path  # the guest's folder, readable by qemu


def _agent(dom, deadline: float):
    """The domain's guest agent once it answers, or None at ``deadline`` (time.monotonic())."""
    from haven.hypervisor.libvirt_agent import LibvirtGuestAgent

    while True:
        try:
            return LibvirtGuestAgent(dom, timeout=10, connect_timeout=5)
        except Exception:
            if time.monotonic() > deadline:
                return None
            time.sleep(1)


@pytest.fixture(scope="module")
def guest(libvirtd, guest_images):
    import libvirt

    from haven.hypervisor.libvirt_agent import LibvirtGuestAgent

    work = Path(tempfile.mkdtemp(prefix="haven-real-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    conn = libvirt.open("qemu:///system")

    def drop(name: str = DOMAIN):
        try:
            d = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if d.isActive():
            d.destroy()
        for cp in d.listAllCheckpoints():
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)

    drop(), drop(RESTORED)
    disk = testvm.new_disk(guest_images, work / "vda.qcow2")
    dom = conn.defineXML(domain_xml(DOMAIN, guest_images, disk, work / "console.log"))
    dom.create()
    assert _agent(dom, time.monotonic() + 180) is not None, "the test guest's agent did not answer within 180 s"

    def shell(script: str) -> str:
        res = LibvirtGuestAgent(dom, timeout=60).shell(script, timeout=120)
        assert res.ok, res.stderr
        return res.stdout

    try:
        yield Guest(shell, conn, work)
    finally:
        drop(RESTORED), drop()
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


def _virsh(*args: str) -> str:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True)
    assert done.returncode == 0, (args, done.stderr)  # libvirt's reason, e.g. the console log held by the original
    return done.stdout


def _restore_vm_starts_next_to_the_original(server: HavenServer, guest: Guest, point: str, content: str) -> None:
    """``restore-vm`` of ``point`` as a new VM; started with ``virsh start`` while the original runs, it has its own
    UUID, MAC, name and console log, and the file written before ``point`` reads back inside it."""
    original = ET.fromstring(_virsh("dumpxml", DOMAIN))
    folder = guest.work / "restored-vm"
    job = run(server, "restore", "restore-vm", *V, "--vm", DOMAIN, "-r", point, "--target-vm-name", RESTORED,
              "--target-folder", str(folder), "--wait")
    assert job["status"] == "Completed" and job["result"]["vm"] == RESTORED, job
    try:
        _virsh("start", RESTORED)
        assert _virsh("domstate", DOMAIN).strip() == "running" and _virsh("domstate", RESTORED).strip() == "running"
        run(server, "vm", "refresh")
        states = {v["name"]: v["power_state"] for v in run(server, "vm", "list")}
        assert states[DOMAIN] == "running" and states[RESTORED] == "running", states

        copy = ET.fromstring(_virsh("dumpxml", RESTORED))
        assert copy.findtext("name") == RESTORED
        assert copy.findtext("uuid") and copy.findtext("uuid") != original.findtext("uuid")
        macs = {i.find("mac").get("address") for i in original.iter("interface")}
        assert macs and not macs & {i.find("mac").get("address") for i in copy.iter("interface")}
        log = copy.find("devices/serial/source").get("path")
        assert log != original.find("devices/serial/source").get("path") and Path(log).parent == folder and Path(log).exists()
        disk = Path(copy.find("devices/disk/source").get("file"))
        assert disk.parent == folder

        agent = _agent(guest.conn.lookupByName(RESTORED), time.monotonic() + 60)
        if agent is not None:  # read back by the restored VM itself
            res = agent.shell("cat /root/haven-real.txt", timeout=30)
            assert res.ok, res.stderr
            assert res.stdout == f"{content}\n"
        else:  # the guest booted (it runs) but its agent is slow under TCG: read its disk once it is stopped
            _virsh("destroy", RESTORED)
            assert testvm.fs_cat(disk, "/root/haven-real.txt") == f"{content}\n".encode()
        assert guest.shell("echo alive") == "alive\n"  # the original kept running and answering
    finally:
        dom = guest.conn.lookupByName(RESTORED)
        if dom.isActive():
            dom.destroy()
        dom.undefine()


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
        guest.shell(f"printf '%s' '{OLD_OS}' > /etc/os-release && sync")
        try:
            bad = run(server, "prepare", "check", "-s", "prod", "--vm", DOMAIN, expect=7)
            o = _checks(run(server, "-o", "json", "prepare", "check", "-s", "prod", "--vm", DOMAIN, expect=7))["support:guest-os"]
            assert "UserErrorGuestOsUnsupported" in bad.output
            assert o["status"] == "fail" and "Windows Server 2003 R2" in o["reason"] and "Upgrade the guest" in o["fix"]
            refused = run(server, "protection", "enable-for-vm", *V, "--vm", DOMAIN, expect=7)
            assert "UserErrorGuestOsUnsupported" in refused.output
        finally:
            guest.shell("rm -f /etc/os-release && sync")
        assert _checks(run(server, "prepare", "check", "-s", "prod", "--vm", DOMAIN))["support:guest-os"]["status"] == "pass"

        run(server, "protection", "enable-for-vm", *V, "--vm", DOMAIN)
        first = run(server, "protection", "backup-now", *V, "--vm", DOMAIN, "--wait")
        assert first["status"] in ("Completed", "CompletedWithWarnings"), first
        content = os.urandom(16).hex()
        guest.shell(f"echo {content} > /root/haven-real.txt && sync")
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

        _restore_vm_starts_next_to_the_original(server, guest, newest, content)
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


def _remote_vm(server: HavenServer, timeout: float = 60) -> dict:
    """The guest as the remote agent of host kvm2 reported it, once its guest agent was probed."""
    end = time.monotonic() + timeout
    while True:
        vm = next((v for v in run(server, "vm", "list") if v["name"] == DOMAIN and v["host"] == "kvm2"), None)
        if vm and (vm["guest_agent"] or {}).get("checked_at"):
            return vm
        assert time.monotonic() < end, f"the agent of kvm2 never reported {DOMAIN}: {vm}"
        time.sleep(0.5)


@pytest.mark.parametrize("server_minimum, agent_own_minimum, refused", [("99.0", None, True), ("7.0", "99.0", False)],
                         ids=["server-above-the-guest", "agent-host-setting-ignored"])
def test_a_remote_agent_applies_the_servers_minimum_guest_agent_version(guest, tmp_path, server_minimum, agent_own_minimum, refused):
    """A ``haven agent`` process on another host probes the real guest with the server's configured minimum, not
    its own (default or configured): the facts it reports say refused exactly when the server's minimum is above
    the guest's qemu-guest-agent 7.x."""
    from tests.services._util import start, stop

    server = HavenServer(tmp_path / "srv", env={"HAVEN_MIN_GUEST_AGENT_VERSION": server_minimum}).start()  # folder VMs only
    agent = None
    try:
        token = tmp_path / "agent" / "token"
        run(server, "host", "add", "--name", "kvm2", "--region", "local", "--adapter", URI, "--token-file", str(token))
        own = {"HAVEN_MIN_GUEST_AGENT_VERSION": agent_own_minimum} if agent_own_minimum else {}
        env = {k: v for k, v in os.environ.items() if k != "HAVEN_MIN_GUEST_AGENT_VERSION"}
        agent = start([sys.executable, "-m", "haven.cli.main", "agent", "--server", server.url, "--token-file", str(token),
                       "--adapter", URI, "--home", str(tmp_path / "agent")],
                      tmp_path / "agent" / "agent.log", env={**env, "HAVEN_HOME": str(tmp_path / "agent"), **own})
        ga = _remote_vm(server)["guest_agent"]
        assert ga["answering"] is True and ga["version"].startswith("7."), ga
        if refused:
            assert ga["version_ok"] is False and ga["problem_code"] == "UserErrorGuestAgentVersionUnsupported", ga
            assert "99.0" in ga["problem"], ga
        else:
            assert ga["version_ok"] is True and ga["problem_code"] is None, ga
        assert ga["minimum_version"] == server_minimum
    finally:
        if agent is not None:
            stop(agent)
        server.stop()

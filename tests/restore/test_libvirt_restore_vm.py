"""Restored libvirt VMs start next to their running original (issue 18, item 4).

On the project's test guest under a real libvirtd: the definition a restore writes or defines is
clean of the running original's state (``virsh dumpxml`` of a running domain carries its ``id``,
device aliases, generated channel paths, and the original's UUID, MACs and console log file), so
that both run at once. The last test drives ``restore-vm`` end to end: back up the running guest,
restore it as a new VM, start it while the original runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haven.services.restore import write_vm_definition
from tests.services import testvm
from tests.services.guest_domain import domain_xml
from tests.services._util import require

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]

URI = "qemu:///system"
ORIGINAL = "haven-test-rvm1"
COPIES = (ORIGINAL + "-def", ORIGINAL + "-restored")
MAC = "52:54:00:aa:bb:07"


def _drop(conn, name: str) -> None:
    import libvirt

    try:
        d = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if d.isActive():
        d.destroy()
    for cp in d.listAllCheckpoints():
        cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


@pytest.fixture(scope="module")
def libvirt_conn():
    from tests.services import libvirtd as svc

    ok, why = svc.available()
    require(ok, why)
    ok, why = testvm.qemu_available()
    require(ok, why)
    try:
        import nbd  # noqa: F401
    except ImportError:
        require(False, "python3-libnbd is not linked into the venv (run scripts/setup-python.sh)")
    daemon = svc.start()
    import libvirt

    conn = libvirt.open(URI)
    yield conn
    conn.close()
    daemon.stop()


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="haven-rvm-test-", dir="/var/tmp"))  # qemu reads it
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def original(libvirt_conn, workdir):
    """The test guest, running under libvirt with a file-backed console."""
    images = testvm.ensure_images()
    for name in (ORIGINAL, *COPIES):
        _drop(libvirt_conn, name)
    disk = testvm.new_disk(images, workdir / "vda.qcow2")
    dom = libvirt_conn.defineXML(domain_xml(ORIGINAL, images, disk, workdir / "console.log", mac=MAC, vnc=True))
    dom.create()
    try:
        yield dom
    finally:
        for name in (ORIGINAL, *COPIES):
            _drop(libvirt_conn, name)


def _dumpxml(name: str) -> str:
    return subprocess.run(["virsh", "-c", URI, "dumpxml", name], check=True, capture_output=True, text=True).stdout


def _start_next_to(conn, original, name: str) -> None:
    """Start ``name`` while the original runs; both run afterwards."""
    dom = conn.lookupByName(name)
    dom.create()  # libvirt.libvirtError (e.g. "Cannot open log file … Device or resource busy") fails the test
    time.sleep(2)
    assert dom.isActive() and original.isActive()
    dom.destroy()


def test_the_restored_definition_of_a_running_guest_is_clean_and_starts_next_to_it(libvirt_conn, original, workdir):
    live = _dumpxml(ORIGINAL)
    src = ET.fromstring(live)
    # what makes the running original's XML unfit for a second VM is really there
    assert src.get("id") and src.find(".//alias") is not None
    assert src.find("devices/serial/source").get("path") == str(workdir / "console.log")
    original_uuid = src.findtext("uuid")

    target = Path(tempfile.mkdtemp(prefix="restore-disks-", dir=workdir))
    os.chmod(target, 0o755)
    copy = target / "vda.qcow2"
    shutil.copy(workdir / "vda.qcow2", copy)
    meta = {"vm": ORIGINAL, "definition": live, "time": "2026-12-03T10:00:00+00:00", "consistency": "CrashConsistent"}
    files = write_vm_definition(target, meta, {"vda": str(copy)}, "p1", name=COPIES[0])
    text = Path(files[0]).read_text()
    dom = ET.fromstring(text)
    assert dom.get("id") is None and dom.find(".//alias") is None
    assert dom.findtext("name") == COPIES[0]
    assert dom.findtext("uuid") and dom.findtext("uuid") != original_uuid
    assert [i.find("mac").get("address") for i in dom.iter("interface")] != [MAC]
    assert dom.find("devices/serial/source").get("path") == str(target / "console.log")
    assert dom.find("devices/channel/source") is None or dom.find("devices/channel/source").get("path") is None
    assert all(g.get("port") in (None, "-1") for g in dom.iter("graphics"))
    assert all(s.get("type") != "dynamic" for s in dom.findall("seclabel"))
    assert dom.find(".//disk/source").get("file") == str(copy)

    libvirt_conn.defineXML(text)
    try:
        _start_next_to(libvirt_conn, original, COPIES[0])
        assert (target / "console.log").exists()
    finally:
        _drop(libvirt_conn, COPIES[0])


def test_restore_vm_of_the_running_guest_starts_next_to_it(world, libvirt_conn, original, workdir):
    from haven.agent.local import LocalAgent

    world.core.subscriptions.create(world.owner, "prod")
    world.core.vaults.create(world.owner, "prod", "v1", "local", None)
    agent = LocalAgent(world.core, URI, host_name="kvm1", region="local")
    agent.register()
    agent.refresh_inventory()
    world.core.protection.enable(world.owner, "prod", "v1", ORIGINAL, host="kvm1")
    backup = world.ok(world.core.protection.backup_now(world.owner, "prod", "v1", ORIGINAL))
    point = backup["result"]["recovery_point_id"]

    parent = Path(tempfile.mkdtemp(prefix="restore-vm-", dir=workdir))
    os.chmod(parent, 0o755)
    target = parent / "new"
    job = world.ok(world.core.restore.restore_vm(world.owner, "prod", "v1", ORIGINAL, point, COPIES[1], target=str(target)))
    try:
        assert job["result"]["vm"] == COPIES[1] and job["result"]["power_state"] == "stopped"
        _start_next_to(libvirt_conn, original, COPIES[1])
        defined = ET.fromstring(libvirt_conn.lookupByName(COPIES[1]).XMLDesc(0))
        assert defined.find("devices/serial/source").get("path") == str(target / "console.log")
        assert defined.findtext("uuid") != original.UUIDString()
        assert [i.find("mac").get("address") for i in defined.iter("interface")] != [MAC]
    finally:
        _drop(libvirt_conn, COPIES[1])

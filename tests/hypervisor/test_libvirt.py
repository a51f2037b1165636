"""The libvirt adapter against a real libvirtd (qemu:///system) running the test guest (TCG)."""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haven.hypervisor import ExtensionConfig, open_adapter
from haven.hypervisor.errors import VmAlreadyExists, VmNotFound

from tests.services.guest_domain import domain_xml

from .conftest import copy_to_raw, extent_bytes, testvm

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]

MiB = 1 << 20
DOMAIN = "haven-test-lv1"


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
def workdir():
    d = Path(tempfile.mkdtemp(prefix="haven-lv-test-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def adapter(libvirtd):
    a = open_adapter("qemu:///system", agent_timeout=60.0)
    yield a
    a.close()


@pytest.fixture(scope="module")
def domain(adapter, guest_images, workdir):
    import libvirt

    conn = adapter.conn
    for stale in (DOMAIN, DOMAIN + "-restored"):
        try:
            d = conn.lookupByName(stale)
            if d.isActive():
                d.destroy()
            for cp in d.listAllCheckpoints():
                cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass
    disk = testvm.new_disk(guest_images, workdir / "vda.qcow2")
    dom = conn.defineXML(domain_xml(DOMAIN, guest_images, disk, workdir / "console.log"))
    dom.create()
    try:
        yield dom
    finally:
        for name in (DOMAIN, DOMAIN + "-restored"):
            try:
                d = conn.lookupByName(name)
                if d.isActive():
                    d.destroy()
                for cp in d.listAllCheckpoints():
                    cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
                d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            except libvirt.libvirtError:
                pass


def _wait_agent(adapter, name, timeout=180):
    import time

    end = time.monotonic() + timeout
    while True:
        st = adapter.guest_agent_status(name)
        if st.answering or time.monotonic() > end:
            return st
        time.sleep(1)


def _guest_shell(dom, script: str) -> str:
    from haven.hypervisor.libvirt_agent import LibvirtGuestAgent

    res = LibvirtGuestAgent(dom, timeout=60).shell(script, timeout=120)
    assert res.ok, res.stderr
    return res.stdout


def test_describe_domain(adapter, domain):
    st = _wait_agent(adapter, DOMAIN)
    assert st.answering and st.usable and st.version.startswith("7.")
    info = adapter.describe(DOMAIN)
    assert info.power_state == "running"
    assert [(d.name, d.format, d.size) for d in info.disks] == [("vda", "qcow2", 128 * MiB)]
    assert info.nics[0]["mac"] == "52:54:00:aa:bb:01"
    assert info.memory_mib == 256 and info.vcpus == 1
    assert ET.fromstring(info.definition).find("name").text == DOMAIN
    assert DOMAIN in [v.name for v in adapter.list_vms()]
    with pytest.raises(VmNotFound):
        adapter.describe("no-such-domain-xyz")


def test_pull_backup_full_then_incremental(adapter, domain, tmp_path, workdir):
    _guest_shell(domain, "echo libvirt-unsynced > /root/lv.txt")
    ext = ExtensionConfig(pre_scripts={"10-pre": "#!/bin/sh\ntouch /root/lv-pre\n"}, version="0.1.0")
    with adapter.snapshot(DOMAIN, None, extension=ext) as snap:
        assert snap.consistency == "application", snap.warnings
        (src,) = snap.disks
        assert src.changed_extents() is None
        raw = tmp_path / "full.raw"
        read = copy_to_raw(src, raw)
        assert 0 < read < src.size
        c1 = snap.checkpoint
    assert testvm.fs_cat(raw, "/root/lv.txt") == b"libvirt-unsynced\n"
    assert c1 in [c.getName() for c in domain.listAllCheckpoints()]

    _guest_shell(domain, "dd if=/dev/urandom of=/root/lvblob bs=1M count=6 2>/dev/null; sync")
    md5 = _guest_shell(domain, "md5sum /root/lvblob").split()[0]
    with adapter.snapshot(DOMAIN, c1) as snap:
        assert not snap.tracking_lost
        assert snap.consistency == "filesystem", snap.warnings
        (src,) = snap.disks
        changed = list(src.changed_extents())
        assert 6 * MiB <= extent_bytes(changed) <= 16 * MiB  # + ext4 journal and metadata
        with open(raw, "r+b") as f:
            for e in changed:
                f.seek(e.offset)
                f.write(src.read(e.offset, e.length))
        c2 = snap.checkpoint
    import hashlib

    assert hashlib.md5(testvm.fs_cat(raw, "/root/lvblob")).hexdigest() == md5
    names = [c.getName() for c in domain.listAllCheckpoints()]
    assert names == [c2]  # older checkpoints merged away

    # a checkpoint that is gone: full read, tracking_lost, new checkpoint
    with adapter.snapshot(DOMAIN, "haven-19700101T000000-deadbeef") as snap:
        assert snap.tracking_lost and snap.disks[0].changed_extents() is None
        assert any("tracking" in w.lower() for w in snap.warnings)
        c3 = snap.checkpoint
    with adapter.snapshot(DOMAIN, c3) as snap:
        assert extent_bytes(snap.disks[0].changed_extents()) < 9 * MiB

    # restore as a new domain from the full+incremental copy
    qcow = workdir / "restored.qcow2"
    os.system(f"qemu-img convert -q -f raw -O qcow2 {raw} {qcow}")
    info = adapter.define_vm(DOMAIN + "-restored", {"vda": str(qcow)}, adapter.describe(DOMAIN).definition)
    assert info.disks[0].path == str(qcow) and info.power_state == "stopped"
    assert info.nics and "mac" in info.nics[0] and info.nics[0]["mac"] != "52:54:00:aa:bb:01"
    with pytest.raises(VmAlreadyExists):
        adapter.define_vm(DOMAIN + "-restored", {"vda": str(qcow)}, info.definition)


def test_stopped_domain_is_crash_consistent(adapter, domain, tmp_path):
    domain.destroy()
    with adapter.snapshot(DOMAIN, None) as snap:
        assert snap.consistency == "crash" and snap.power_state == "stopped"
        raw = tmp_path / "stopped.raw"
        copy_to_raw(snap.disks[0], raw)
    assert testvm.fs_cat(raw, "/etc/inittab") is not None

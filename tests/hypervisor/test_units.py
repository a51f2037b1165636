"""Fast tests of the hypervisor layer without a guest: guest-agent protocol, thaw watchdog, disk sources,
folder definitions, errors. (qemu-img / qemu-nbd are used where present, no VM is booted.)"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from haven.engine.source import DiskSource, Extent
from haven.errors import Conflict, NotFound, PreconditionFailed, UserError
from haven.hypervisor import ExtensionConfig, open_adapter
from haven.hypervisor import errors as E
from haven.hypervisor.guest import Quiescer
from haven.hypervisor.qga import GuestAgent, GuestAgentTimeout, parse_version
from haven.hypervisor.sources import FileDiskSource, merge_extents
from tests.services._util import require_binary, require_module

MiB = 1 << 20


# ---- a fake guest agent on a unix socket ----


class FakeAgent:
    """Speaks enough of the guest-agent protocol; ``stale`` is sent on connect to test guest-sync."""

    def __init__(self, path: str, *, stale: bytes = b"", silent: bool = False, freeze_delay: float = 0.0):
        self.path, self.stale, self.silent, self.freeze_delay = path, stale, silent, freeze_delay
        self.calls: list[tuple[float, str]] = []
        self.frozen = False
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        if self.stale:
            conn.sendall(self.stale)
        for raw in f:
            line = raw.lstrip(b"\xff").strip()
            if not line or self.silent:
                continue
            msg = json.loads(line)
            cmd, args = msg["execute"], msg.get("arguments", {})
            self.calls.append((time.monotonic(), cmd))
            if cmd == "guest-sync-delimited":
                conn.sendall(b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n")
                continue
            if cmd == "guest-fsfreeze-freeze":
                time.sleep(self.freeze_delay)
                self.frozen = True
                ret = 2
            elif cmd == "guest-fsfreeze-thaw":
                self.frozen = False
                ret = 2
            elif cmd == "guest-fsfreeze-status":
                ret = "frozen" if self.frozen else "thawed"
            elif cmd == "guest-info":
                ret = {"version": "7.2.22", "supported_commands": [
                    {"name": "guest-fsfreeze-freeze", "enabled": True}, {"name": "guest-fsfreeze-thaw", "enabled": True}]}
            elif cmd == "guest-exec":
                conn.sendall(json.dumps({"error": {"class": "GenericError", "desc": "Command guest-exec has been disabled"}}).encode() + b"\n")
                continue
            else:
                ret = {}
            conn.sendall(json.dumps({"return": ret}).encode() + b"\n")

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="hvu-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_sync_skips_stale_replies(sockdir):
    fake = FakeAgent(f"{sockdir}/qga.sock", stale=b'{"return": 424242}\n{"retu')
    with GuestAgent(fake.path, timeout=5) as ga:
        assert ga.fsfreeze_status() == "thawed"
        assert ga.version() == "7.2.22"
    fake.close()


def test_silent_agent_times_out(sockdir):
    fake = FakeAgent(f"{sockdir}/qga.sock", silent=True)
    t0 = time.monotonic()
    with pytest.raises(GuestAgentTimeout):
        GuestAgent(fake.path, timeout=30, connect_timeout=0.5)
    assert time.monotonic() - t0 < 3
    fake.close()


def test_freeze_is_thawed_by_the_watchdog_at_the_bound(sockdir):
    fake = FakeAgent(f"{sockdir}/qga.sock")
    with GuestAgent(fake.path, timeout=5) as ga:
        t0 = time.monotonic()
        with ga.frozen(bound=0.3) as fr:
            assert fake.frozen
            time.sleep(1.0)  # the block hangs past the bound
            assert not fake.frozen  # ... but the guest was thawed at the bound
        assert fr.thawed_by_watchdog
        thaws = [t for t, c in fake.calls if c == "guest-fsfreeze-thaw"]
        assert len(thaws) == 1 and 0.25 < thaws[0] - t0 < 0.8
        with ga.frozen(bound=5) as fr2:
            pass
        assert not fr2.thawed_by_watchdog and not fake.frozen
    fake.close()


def test_quiescer_labels_consistency(sockdir):
    fake = FakeAgent(f"{sockdir}/qga.sock")
    with GuestAgent(fake.path, timeout=5) as ga:
        off = ExtensionConfig(install=False)
        q = Quiescer("vm1", ga, None, extension=off, freeze_timeout=5)
        q.prepare()
        with q.hold():
            pass
        q.finish()
        assert q.consistency == "filesystem" and q.warnings == []
        # the point in time is taken after the bound: the guest was thawed -> crash, with a warning
        fake.freeze_delay = 0.1
        q = Quiescer("vm1", ga, None, extension=off, freeze_timeout=0.4)
        with q.hold():
            time.sleep(0.6)
        q.finish()
        assert q.consistency == "crash" and "bound" in q.warnings[0] and not fake.frozen
        # a freeze that does not answer within the bound: thawed anyway, crash, FreezeFailed
        fake.freeze_delay = 0.5
        q = Quiescer("vm1", ga, None, extension=off, freeze_timeout=0.2)
        with q.hold() as fr:
            assert fr is None
        q.finish()
        assert q.consistency == "crash" and "TransientErrorFreezeFailed" in q.warnings[0]
        assert ga.fsfreeze_status() == "thawed"
        fake.freeze_delay = 0
        # the extension cannot be installed (guest-exec disabled): warned, still file-system-consistent
        q = Quiescer("vm1", ga, None, extension=ExtensionConfig(pre_scripts={"a": "true"}), freeze_timeout=5)
        q.prepare()
        with q.hold():
            pass
        q.finish()
        assert q.consistency == "filesystem"
        assert any("TransientErrorExtensionInstallFailed" in w for w in q.warnings)
    q = Quiescer("vm1", None, None)
    with q.hold() as fr:
        assert fr is None
    assert q.consistency == "crash" and q.warnings
    fake.close()


# ---- disk sources ----


def test_file_source_skips_holes(tmp_path):
    p = tmp_path / "d.raw"
    with open(p, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(4 * MiB)
        f.write(b"a" * MiB)
        f.seek(40 * MiB)
        f.write(b"b" * 4096)
    src = FileDiskSource("vda", p)
    assert isinstance(src, DiskSource)
    ext = list(src.data_extents())
    assert sum(e.length for e in ext) <= 2 * MiB
    assert any(e.offset <= 4 * MiB < e.end for e in ext) and any(e.offset <= 40 * MiB < e.end for e in ext)
    assert src.changed_extents() is None
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda o: src.read(o, 4096), [4 * MiB, 40 * MiB, 0, 5 * MiB - 4096]))
    assert parts == [b"a" * 4096, b"b" * 4096, bytes(4096), b"a" * 4096]
    src.close()


def test_file_source_leaves_what_it_read_out_of_the_page_cache(tmp_path):
    """A stopped VM's image read for a backup does not stay in the host's page cache."""
    p = tmp_path / "d.raw"
    p.write_bytes(os.urandom(4 * MiB))
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can leave the cache
        os.preadv(fd, [bytearray(4096)], 0)  # now cached: a NOWAIT read succeeds
        assert os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT) == 4096
        src = FileDiskSource("vda", p)
        assert len(src.read(0, 2 * MiB)) == 2 * MiB
        src.close()
        with pytest.raises(BlockingIOError):  # the range read is no longer cached
            os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
    finally:
        os.close(fd)


def test_merge_extents():
    assert merge_extents([Extent(10, 5), Extent(0, 10), Extent(30, 0), Extent(12, 10)]) == [Extent(0, 22)]


def test_parse_version():
    assert parse_version("7.2.22") == (7, 2, 22)
    assert parse_version("8.0.0-rc1") == (8, 0, 0)
    assert parse_version("2.5") < parse_version("2.10.0")


def test_extension_config_identity():
    a = ExtensionConfig(pre_scripts={"10-db": "echo a"})
    b = ExtensionConfig(pre_scripts={"10-db": "echo b"})
    assert a.content_id != b.content_id and a.content_id == ExtensionConfig(pre_scripts={"10-db": "echo a"}).content_id
    assert "runner.sh" in a.files() and "pre.d/10-db" in a.files()
    with pytest.raises(ValueError):
        ExtensionConfig(pre_scripts={"../evil": "x"})


# ---- folder adapter without a running VM ----

@pytest.fixture
def qemu_nbd_reader():
    """qemu-img, qemu-io and qemu-nbd (qemu-utils) and the nbd Python module: missing ones fail in CI."""
    for tool in ("qemu-img", "qemu-io", "qemu-nbd"):
        require_binary(tool)
    require_module("nbd")


def _folder_vm(root: Path, name: str, fmt: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    disk = folder / f"vda.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(disk), "64M"], check=True)
    # 1 MiB of data at 8 MiB, through qemu-io so qcow2 allocates only that
    subprocess.run(["qemu-io", "-f", fmt, "-c", "write -P 0x5a 8M 1M", str(disk)], check=True, capture_output=True)
    (folder / "vm.json").write_text(json.dumps({"name": name, "disks": [{"name": "vda", "file": disk.name, "format": fmt}],
                                                "encryption": {"bek_secret": "s1", "kek_key": "k1"}}))
    return folder


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_offline_snapshot_reads_only_data(tmp_path, fmt, qemu_nbd_reader):
    root = tmp_path / "vms"
    _folder_vm(root, "cold", fmt)
    adapter = open_adapter(f"folder://{root}")
    info = adapter.describe("cold")
    assert info.power_state == "stopped" and info.disks[0].size == 64 * MiB
    assert info.encryption == {"bek_secret": "s1", "kek_key": "k1"}
    assert info.guest_agent is not None and info.guest_agent.problem_code == "UserErrorGuestAgentNotConfigured"
    with adapter.snapshot("cold", None) as snap:
        assert snap.consistency == "crash" and snap.checkpoint is None
        (src,) = snap.disks
        ext = list(src.data_extents())
        assert 1 * MiB <= sum(e.length for e in ext) <= 2 * MiB
        assert src.read(8 * MiB, 4096) == b"\x5a" * 4096
        with ThreadPoolExecutor(4) as pool:
            blocks = list(pool.map(lambda i: src.read(8 * MiB + i * 65536, 65536), range(16)))
        assert all(b == b"\x5a" * 65536 for b in blocks)
    with pytest.raises(E.DiskNotFound):
        adapter.snapshot("cold", None, include_disks=["vdz"])


def test_define_vm_refuses_existing_name(tmp_path, qemu_nbd_reader):
    root = tmp_path / "vms"
    _folder_vm(root, "src", "qcow2")
    adapter = open_adapter(f"folder://{root}")
    restored = tmp_path / "restored.qcow2"
    shutil.copy(root / "src" / "vda.qcow2", restored)
    info = adapter.define_vm("copy", {"vda": str(restored)}, adapter.describe("src").definition)
    assert info.name == "copy" and info.disks[0].path == str(restored) and info.encryption
    with pytest.raises(E.VmAlreadyExists) as exc:
        adapter.define_vm("src", {"vda": str(restored)}, None)
    assert isinstance(exc.value, Conflict) and exc.value.code == "UserErrorVmAlreadyExists"
    assert sorted(v.name for v in adapter.list_vms()) == ["copy", "src"]


def test_open_adapter_and_errors(tmp_path):
    with pytest.raises(E.HypervisorUriInvalid):
        open_adapter("folder://relative/path")
    with pytest.raises(E.HypervisorUriInvalid):
        open_adapter("vmware://x")
    adapter = open_adapter(f"folder://{tmp_path}")
    assert adapter.kind == "folder" and adapter.list_vms() == []
    with pytest.raises(E.VmNotFound) as exc:
        adapter.describe("ghost")
    assert isinstance(exc.value, NotFound) and "ghost" in exc.value.text


def test_error_classes_have_codes_and_fixes():
    cats = (UserError, NotFound, Conflict, PreconditionFailed, E.Transient, E.InternalError)
    for name in E.__all__:
        cls = getattr(E, name)
        assert issubclass(cls, cats), name
        assert cls.code and cls.message and cls.recommendation
    err = E.GuestAgentNotResponding(name="web1", timeout=30, reason="no answer")
    assert "web1" in err.text and "qemu-guest-agent" in err.fix
    err = E.GuestAgentVersionUnsupported(name="web1", version="2.5.0", minimum="2.10.0")
    assert "2.5.0" in err.text and "2.10.0" in err.fix


def test_selective_disks(tmp_path, qemu_nbd_reader):
    root = tmp_path / "vms"
    folder = _folder_vm(root, "two", "raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "vdb.qcow2"), "32M"], check=True)
    d = json.loads((folder / "vm.json").read_text())
    d["disks"].append({"name": "vdb", "file": "vdb.qcow2", "format": "qcow2"})
    (folder / "vm.json").write_text(json.dumps(d))
    adapter = open_adapter(f"folder://{root}")
    assert [x.name for x in adapter.describe("two").disks] == ["vda", "vdb"]
    with adapter.snapshot("two", None, include_disks=["vdb"]) as snap:
        assert [s.name for s in snap.disks] == ["vdb"]
        assert snap.disks[0].size == 32 * MiB and list(snap.disks[0].data_extents()) == []  # empty: nothing to read
    with adapter.snapshot("two", None) as snap:
        assert [s.name for s in snap.disks] == ["vda", "vdb"]


LV_XML = """<domain type='test'>
  <name>enc1</name><memory unit='MiB'>128</memory><vcpu>2</vcpu>
  <metadata><haven:encryption xmlns:haven='https://haven.dev/xmlns/libvirt/vm/1' method='luks'
      bek_secret='bek-enc1' kek_key='kek-main'/></metadata>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nonexistent/enc1.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:01:02:03'/><source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>"""


def test_libvirt_adapter_on_the_test_driver(tmp_path):
    require_module("libvirt")
    adapter = open_adapter("test:///default")
    adapter.conn.defineXML(LV_XML)
    info = adapter.describe("enc1", probe_guest=False)
    assert info.power_state == "stopped" and info.vcpus == 2 and info.memory_mib == 128
    assert info.encryption == {"method": "luks", "bek_secret": "bek-enc1", "kek_key": "kek-main"}
    assert info.nics == [{"type": "network", "mac": "52:54:00:01:02:03", "network": "default", "model": "virtio"}]
    assert info.guest_agent.problem_code == "UserErrorGuestAgentNotConfigured"
    restored = tmp_path / "r.qcow2"
    require_binary("qemu-img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(restored), "16M"], check=True)
    new = adapter.define_vm("enc1-restored", {"vda": str(restored)}, info.definition)
    assert new.disks[0].path == str(restored) and new.uuid != info.uuid
    assert new.nics[0].get("mac") != "52:54:00:01:02:03" and new.encryption == info.encryption
    with pytest.raises(E.VmAlreadyExists):
        adapter.define_vm("enc1", {"vda": str(restored)}, info.definition)
    with pytest.raises(E.VmNotFound):
        adapter.describe("nope")
    adapter.close()

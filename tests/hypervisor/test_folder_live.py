"""Live backups of a real guest (QEMU TCG + qemu-guest-agent) run as an image-folder VM.

One guest is booted for the module; the tests run in order and build on one another where noted
(checkpoint chain), and the last ones stop the guest and back it up offline.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from haven.engine.source import DiskSource
from haven.hypervisor import ExtensionConfig, open_adapter
from haven.hypervisor.errors import BackupAlreadyRunning, VmAlreadyExists

from .conftest import boot_folder_vm, copy_to_raw, extent_bytes, make_folder_vm, testvm

pytestmark = pytest.mark.vm

MiB = 1 << 20
PRE = "#!/bin/sh\necho pre-ran-$(date +%s) > /root/haven-pre-marker\n"
POST = "#!/bin/sh\necho post > /run/haven-post-marker\n"


@pytest.fixture(scope="module")
def guest(guest_images, vm_root):
    folder = make_folder_vm(vm_root, "web1", guest_images)
    vm = boot_folder_vm(guest_images, folder)
    try:
        vm.wait_for_agent()
        yield vm
    finally:
        vm.kill()


@pytest.fixture(scope="module")
def adapter(vm_root):
    return open_adapter(f"folder://{vm_root}", agent_timeout=60.0)


@pytest.fixture(scope="module")
def chain() -> dict:
    return {}


def _fs_cat(tmp_path, src: DiskSource, path: str) -> bytes | None:
    raw = tmp_path / f"{src.name}.raw"
    copy_to_raw(src, raw)
    return testvm.fs_cat(raw, path)


def test_describe_running_vm(adapter, guest):
    info = adapter.describe("web1")
    assert info.power_state == "running"
    assert [d.name for d in info.disks] == ["vda"]
    assert info.disks[0].format == "qcow2" and info.disks[0].size == 128 * MiB
    ga = info.guest_agent
    assert ga is not None and ga.present and ga.answering and ga.usable
    assert ga.version and ga.version.startswith("7.")
    assert ga.os.get("kernel-release", "").endswith("cloud-amd64")
    assert "guest-fsfreeze-freeze" in ga.supported_commands
    assert [v.name for v in adapter.list_vms()] == ["web1"]


def test_application_consistent_point_has_unsynced_file(adapter, guest, tmp_path, chain):
    # written into the page cache only: without the freeze it would not be on the disk yet
    guest.shell("echo written-but-not-synced > /root/unsynced.txt")
    ext = ExtensionConfig(pre_scripts={"10-flush": PRE}, post_scripts={"10-resume": POST}, version="0.1.0")
    with adapter.snapshot("web1", None, extension=ext, freeze_timeout=60) as snap:
        assert snap.consistency == "application", snap.warnings
        assert snap.warnings == []
        assert snap.checkpoint and snap.checkpoint.startswith("haven-")
        assert snap.tracking_lost is False
        assert snap.extension is not None and snap.extension.status == "installed"
        (src,) = snap.disks
        assert src.changed_extents() is None  # first point: nothing to compare with
        data = extent_bytes(src.data_extents())
        assert 0 < data < src.size  # holes and zeros are not data
        assert _fs_cat(tmp_path, src, "/root/unsynced.txt") == b"written-but-not-synced\n"
        assert (_fs_cat(tmp_path, src, "/root/haven-pre-marker") or b"").startswith(b"pre-ran-")
        chain["c1"] = snap.checkpoint
        chain["full_raw"] = tmp_path / "vda.raw"
    assert guest.shell("cat /run/haven-post-marker").strip() == "post"
    with guest.agent() as ga:
        assert ga.fsfreeze_status() == "thawed"


def test_incremental_reads_about_what_was_written(adapter, guest, chain):
    guest.shell("dd if=/dev/urandom of=/root/blob8 bs=1M count=8 2>/dev/null; sync")
    blob_md5 = guest.shell("md5sum /root/blob8").split()[0]
    with adapter.snapshot("web1", chain["c1"]) as snap:
        assert snap.consistency == "filesystem", snap.warnings  # frozen, no extension scripts
        assert snap.tracking_lost is False
        (src,) = snap.disks
        changed = list(src.changed_extents())
        total = extent_bytes(changed)
        assert 8 * MiB <= total <= 18 * MiB, total  # about N MiB (+ ext4 journal/metadata), not the disk
        assert total < src.size / 4
        # reading only the changed extents is enough to rebuild the file on top of the full copy
        with open(chain["full_raw"], "r+b") as f:
            for e in changed:
                f.seek(e.offset)
                f.write(src.read(e.offset, e.length))
        chain["c2"] = snap.checkpoint
    assert hashlib.md5(testvm.fs_cat(chain["full_raw"], "/root/blob8")).hexdigest() == blob_md5


def test_failed_backup_keeps_previous_checkpoint(adapter, guest, chain):
    guest.shell("dd if=/dev/urandom of=/root/blob2 bs=1M count=2 2>/dev/null; sync")
    with pytest.raises(RuntimeError):
        with adapter.snapshot("web1", chain["c2"]) as snap:
            assert snap.disks[0].changed_extents() is not None
            raise RuntimeError("the engine failed")
    guest.shell("dd if=/dev/urandom of=/root/blob3 bs=1M count=3 2>/dev/null; sync")
    with adapter.snapshot("web1", chain["c2"]) as snap:
        assert not snap.tracking_lost
        total = extent_bytes(snap.disks[0].changed_extents())
        assert 5 * MiB <= total <= 15 * MiB, total  # both writes, since c2
        chain["c3"] = snap.checkpoint


def test_one_backup_at_a_time(adapter, guest, chain):
    with adapter.snapshot("web1", chain["c3"]) as snap:
        with pytest.raises(BackupAlreadyRunning):
            adapter.snapshot("web1", None)
        # the backup holds the monitor: the VM is still reported running
        assert adapter.describe("web1", probe_guest=False).power_state == "running"
        chain["c4"] = snap.checkpoint


def test_old_agent_is_reported_and_backup_is_crash_consistent(vm_root, guest, chain):
    strict = open_adapter(f"folder://{vm_root}", agent_timeout=60.0, min_agent_version="99.0")
    st = strict.guest_agent_status("web1")
    assert st.answering and st.version_ok is False and not st.usable
    assert st.problem_code == "UserErrorGuestAgentVersionUnsupported" and "99.0" in st.recommendation
    with strict.snapshot("web1", chain["c4"]) as snap:
        assert snap.consistency == "crash"
        assert any("UserErrorGuestAgentVersionUnsupported" in w for w in snap.warnings)
        assert not snap.tracking_lost
        chain["c4"] = snap.checkpoint


def test_a_crashed_backup_leaves_nothing_in_the_way(adapter, guest, chain):
    snap = adapter.snapshot("web1", chain["c4"])
    # the backup process dies: no release, the monitor connection just drops
    snap._released = True
    snap._qmp.close()
    for fn in snap._finalizers:
        fn()
    with adapter.snapshot("web1", chain["c4"]) as again:
        assert any("leftovers" in w for w in again.warnings)
        assert again.disks[0].changed_extents() is not None
        chain["c4"] = again.checkpoint


def test_lost_bitmap_reads_everything_then_tracks_again(adapter, guest, chain):
    with guest.qmp() as q:
        q.execute("block-dirty-bitmap-remove", node="disk0", name=chain["c4"])
    with adapter.snapshot("web1", chain["c4"]) as snap:
        assert snap.tracking_lost is True
        assert snap.disks[0].changed_extents() is None
        assert any("tracking" in w for w in snap.warnings)
        assert snap.checkpoint and snap.checkpoint != chain["c4"]
        new = snap.checkpoint
    guest.shell("dd if=/dev/urandom of=/root/blob1 bs=1M count=1 2>/dev/null; sync")
    with adapter.snapshot("web1", new) as snap:
        assert not snap.tracking_lost
        assert MiB <= extent_bytes(snap.disks[0].changed_extents()) <= 9 * MiB
        chain["c5"] = snap.checkpoint
    with guest.qmp() as q:  # old bitmaps are cleaned up: only the newest checkpoint remains
        (dev,) = [d for d in q.execute("query-block") if d.get("inserted")]
        names = [b["name"] for b in dev["inserted"].get("dirty-bitmaps", [])]
    assert names == [chain["c5"]]


def test_freeze_never_outlives_its_bound(adapter, guest, chain):
    t0 = time.monotonic()
    with adapter.snapshot("web1", chain["c5"], freeze_timeout=0.001) as snap:
        assert snap.consistency == "crash"
        assert snap.warnings
        chain["c6"] = snap.checkpoint
    assert time.monotonic() - t0 < 60
    with guest.agent() as ga:
        assert ga.fsfreeze_status() == "thawed"
    guest.shell("touch /root/still-writable")


def test_extension_upgrade_and_state(adapter, guest):
    cfg = ExtensionConfig(pre_scripts={"10-flush": PRE}, post_scripts={"10-resume": POST}, version="0.1.0")
    st = adapter.ensure_extension("web1", config=cfg)  # the backups since used Haven's default configuration
    assert st.status == "upgraded" and st.message == "configuration changed: re-installed"
    st = adapter.ensure_extension("web1", config=cfg)
    assert st.status == "current" and st.version == "0.1.0"
    assert adapter.extension_state("web1", version="0.2.0").status == "outdated"
    st = adapter.ensure_extension("web1", version="0.2.0", config=cfg)
    assert st.status == "upgraded" and st.previous_version == "0.1.0" and st.version == "0.2.0"
    assert adapter.extension_state("web1", version="0.2.0").status == "current"
    out = guest.shell("cat /var/lib/haven-extension/manifest.json; ls /var/lib/haven-extension/pre.d")
    assert '"version": "0.2.0"' in out and "10-flush" in out
    assert guest.shell("/bin/sh /var/lib/haven-extension/runner.sh pre").strip().endswith("ran=1 failed=0")


def test_guest_owned_scripts_make_points_application_consistent(adapter, guest, chain):
    guest.shell("mkdir -p /etc/haven/pre-snapshot.d && printf '#!/bin/sh\\necho own > /run/own-pre\\n' "
                "> /etc/haven/pre-snapshot.d/50-own")
    try:
        with adapter.snapshot("web1", chain["c6"]) as snap:  # Haven's default extension, no pushed scripts
            assert snap.consistency == "application", snap.warnings
            assert snap.extension is not None and snap.extension.status in ("installed", "upgraded")
            chain["c6"] = snap.checkpoint
        assert guest.shell("cat /run/own-pre").strip() == "own"
        # a failing script: warned, and the point is only file-system-consistent
        guest.shell("printf '#!/bin/sh\\nexit 3\\n' > /etc/haven/pre-snapshot.d/60-broken")
        with adapter.snapshot("web1", chain["c6"]) as snap:
            assert snap.consistency == "filesystem"
            assert any("pre-snapshot scripts" in w and "60-broken rc=3" in w for w in snap.warnings)
            chain["c6"] = snap.checkpoint
    finally:
        guest.shell("rm -rf /etc/haven")


def test_stopped_vm_is_crash_consistent_and_restorable(adapter, guest, guest_images, vm_root, tmp_path, chain):
    guest.shell("echo before-stop > /root/stopped.txt; sync")
    guest.stop()
    assert adapter.describe("web1").power_state == "stopped"
    with adapter.snapshot("web1", chain["c6"]) as snap:
        assert snap.consistency == "crash"
        assert any("stopped" in w for w in snap.warnings)
        (src,) = snap.disks
        assert src.changed_extents() is None
        assert snap.checkpoint == chain["c6"]  # the persistent bitmap keeps tracking across the stop
        raw = tmp_path / "restored.raw"
        read = copy_to_raw(src, raw)
        assert read < src.size
    assert testvm.fs_cat(raw, "/root/stopped.txt") == b"before-stop\n"
    assert testvm.fs_cat(raw, "/root/unsynced.txt") == b"written-but-not-synced\n"

    # the restored disk makes a new VM that boots, and its guest agent reads the file back
    info = adapter.define_vm("web1-restored", {"vda": str(raw)}, adapter.describe("web1").definition)
    assert info.disks[0].format == "raw" and info.uuid
    with pytest.raises(VmAlreadyExists):
        adapter.define_vm("web1-restored", {"vda": str(raw)}, None)
    vm2 = testvm.boot(guest_images, raw, vm_root / "web1-restored" / "run", fmt="raw")
    try:
        vm2.wait_for_agent()
        assert vm2.shell("cat /root/unsynced.txt /root/stopped.txt") == "written-but-not-synced\nbefore-stop\n"
    finally:
        vm2.kill()


def test_tracking_survives_clean_restart_and_heals_after_a_crash(adapter, guest_images, vm_root, chain):
    folder = vm_root / "web1"
    vm = boot_folder_vm(guest_images, folder)
    try:
        vm.wait_for_agent()
        vm.shell("dd if=/dev/urandom of=/root/after-restart bs=1M count=2 2>/dev/null; sync")
        with adapter.snapshot("web1", chain["c6"]) as snap:  # the persistent bitmap was reloaded
            assert not snap.tracking_lost, snap.warnings
            assert 2 * MiB <= extent_bytes(snap.disks[0].changed_extents()) <= 10 * MiB
            c7 = snap.checkpoint
    finally:
        vm.kill()  # a host crash: QEMU dies without closing the image
    vm = boot_folder_vm(guest_images, folder)
    try:
        vm.wait_for_agent()
        with adapter.snapshot("web1", c7) as snap:  # the bitmap is inconsistent now: full read, new chain
            assert snap.tracking_lost and snap.disks[0].changed_extents() is None
            c8 = snap.checkpoint
        with adapter.snapshot("web1", c8) as snap:
            assert not snap.tracking_lost and snap.disks[0].changed_extents() is not None
    finally:
        vm.kill()

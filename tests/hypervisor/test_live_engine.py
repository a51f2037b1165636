"""The live path end to end, engine included: a running guest's disk read over QEMU's NBD export
with several requests in flight, backed up full and incremental, and both points restored byte for
byte equal to what the export served at the point in time."""

from __future__ import annotations

import pytest

from haven.engine import LocalBackend, LocalKeyWrapper, Repository
from haven.hypervisor import open_adapter

from .conftest import boot_folder_vm, copy_to_raw, make_folder_vm

pytestmark = pytest.mark.vm

MiB = 1 << 20


@pytest.fixture(scope="module")
def guest(guest_images, vm_root):
    folder = make_folder_vm(vm_root, "eng1", guest_images)
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
def repo(vm_root):
    return Repository.init(LocalBackend(vm_root / "vault"), LocalKeyWrapper(b"haven-test-master-key-0123456789"), {"name": "v"})


def test_live_full_and_incremental_restore_byte_for_byte(adapter, guest, repo, tmp_path):
    guest.shell("dd if=/dev/urandom of=/root/r1 bs=1M count=16 2>/dev/null; seq 1 400000 > /root/t1; sync")
    with adapter.snapshot("eng1", None) as snap:
        (src,) = snap.disks
        full = repo.backup("eng1", "p1", [src], {})
        assert src.peak_in_flight >= 2, "the backup read the export one request at a time"
        copy_to_raw(src, tmp_path / "at-p1.raw")  # what the export served for this point in time
        checkpoint = snap.checkpoint
    repo.restore_disk("eng1", "p1", "vda", tmp_path / "p1.raw")
    assert (tmp_path / "p1.raw").read_bytes() == (tmp_path / "at-p1.raw").read_bytes()

    # about 3 MiB rewritten in 64 KiB pieces spread over the file written above
    guest.shell("for i in $(seq 0 47); do dd if=/dev/urandom of=/root/r1 bs=64k seek=$((i * 5)) count=1 "
                "conv=notrunc 2>/dev/null; done; sync")
    with adapter.snapshot("eng1", checkpoint) as snap:
        (src,) = snap.disks
        assert src.changed_extents() is not None
        inc = repo.backup("eng1", "p2", [src], {}, parent_point_id="p1")
        copy_to_raw(src, tmp_path / "at-p2.raw")
    assert inc.bytes_read < full.bytes_read / 2, (inc.bytes_read, full.bytes_read)
    repo.restore_disk("eng1", "p2", "vda", tmp_path / "p2.raw")
    assert (tmp_path / "p2.raw").read_bytes() == (tmp_path / "at-p2.raw").read_bytes()
    assert (tmp_path / "p2.raw").read_bytes() != (tmp_path / "p1.raw").read_bytes()

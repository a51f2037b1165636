"""A running guest without a guest agent: the backup still runs, crash-consistent, with a clear warning."""

from __future__ import annotations

import pytest

from haven.hypervisor import open_adapter

from .conftest import boot_folder_vm, copy_to_raw, make_folder_vm, testvm

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def silent_guest(guest_images, vm_root):
    folder = make_folder_vm(vm_root, "noagent", guest_images, agent=False)
    make_folder_vm(vm_root, "nochannel", guest_images, agent=False, agent_channel=False)
    vm = boot_folder_vm(guest_images, folder)
    try:
        vm.wait_for_console("rc done")
        yield vm
    finally:
        vm.kill()


def test_silent_agent_gives_crash_point_with_warning(silent_guest, vm_root, tmp_path):
    adapter = open_adapter(f"folder://{vm_root}", agent_timeout=3.0)
    status = adapter.guest_agent_status("noagent")
    assert status.present and not status.answering and not status.usable
    assert status.problem_code == "UserErrorGuestAgentNotResponding"
    assert "qemu-guest-agent" in status.recommendation

    with adapter.snapshot("noagent", None) as snap:
        assert snap.consistency == "crash"
        assert len(snap.warnings) == 1
        assert "UserErrorGuestAgentNotResponding" in snap.warnings[0]
        assert "install qemu-guest-agent" in snap.warnings[0].lower()
        assert snap.checkpoint  # changed-block tracking works without an agent
        raw = tmp_path / "noagent.raw"
        copy_to_raw(snap.disks[0], raw)
    # nothing lost: the disk's files are all there
    assert testvm.fs_cat(raw, "/etc/inittab") is not None
    st = adapter.ensure_extension("noagent")
    assert st.status == "unavailable" and st.error_code == "UserErrorGuestAgentNotResponding"
    assert "qemu-guest-agent" in st.message


def test_missing_agent_channel_is_reported(vm_root):
    adapter = open_adapter(f"folder://{vm_root}", agent_timeout=3.0)
    status = adapter.guest_agent_status("nochannel")  # stopped VM: channel absent in its definition
    assert not status.present
    assert status.problem_code == "UserErrorGuestAgentNotConfigured"
    assert "org.qemu.guest_agent.0" in status.recommendation

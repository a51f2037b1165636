"""Errors of the hypervisor layer: VMs, disks, QMP, the guest agent and the backup extension.

Each class derives from a category of :mod:`haven.errors` (which fixes its HTTP status and exit
code) and names a stable ``code``, a ``message`` and a ``recommendation`` (the fix), both
``str.format`` templates filled from the keyword arguments given when raising.
"""

from __future__ import annotations

from haven.errors import Conflict, InternalError, NotFound, PreconditionFailed, Transient, UserError

__all__ = [
    "HypervisorUriInvalid",
    "VmNotFound",
    "VmAlreadyExists",
    "VmDefinitionInvalid",
    "DiskNotFound",
    "DiskOutsideVmFolder",
    "DiskFormatUnsupported",
    "DiskInUse",
    "BackupAlreadyRunning",
    "QmpUnavailable",
    "QmpCommandFailed",
    "GuestAgentNotConfigured",
    "GuestAgentNotResponding",
    "GuestAgentVersionUnsupported",
    "GuestAgentCommandFailed",
    "GuestAgentCommandDisabled",
    "FreezeFailed",
    "ExtensionInstallFailed",
    "ExtensionUpdateInProgress",
    "SnapshotFailed",
    "LibvirtUnavailable",
    "NbdReadFailed",
]


# ---- adapters and VMs ----


class HypervisorUriInvalid(UserError):
    code = "UserErrorHypervisorUriInvalid"
    message = "The hypervisor address '{uri}' is not understood: {reason}."
    recommendation = (
        "Use folder:///absolute/path for a folder of image VMs, or a libvirt URI such as "
        "qemu:///system or qemu:///session."
    )


class VmNotFound(NotFound):
    code = "UserErrorVmNotFound"
    message = "The VM '{name}' was not found on {host}."
    recommendation = "List the VMs of this host to see their exact names; the VM may have been deleted or renamed."


class VmAlreadyExists(Conflict):
    code = "UserErrorVmAlreadyExists"
    message = "A VM named '{name}' already exists on {host}."
    recommendation = "Choose another name for the restored VM, or restore over the existing VM instead."


class VmDefinitionInvalid(UserError):
    code = "UserErrorVmDefinitionInvalid"
    message = "The definition of VM '{name}' is invalid: {reason}."
    recommendation = "Fix the VM's definition file ({path}); it needs a name and a list of disks with their file and format."


class DiskNotFound(NotFound):
    code = "UserErrorDiskNotFound"
    message = "The disk '{disk}' of VM '{name}' was not found: {reason}."
    recommendation = "Check the disk names given (the VM has: {available}) and that the disk files exist."


class DiskOutsideVmFolder(PreconditionFailed):
    code = "UserErrorDiskOutsideVmFolder"
    message = ("The disk '{disk}' of VM '{name}' is {path}, which resolves to {resolved}: outside the VM's folder {folder} "
               "and every allowed disk root; Haven did not read it.")
    recommendation = ("Move the image into {folder} and name it relative to that folder in vm.json; or, if images in that "
                      "folder are meant to be backed up, allow it in haven.toml: [folder] allowed_disk_roots = [\"/srv/images\"] "
                      "(the folder holding the image), then restart Haven.")


class DiskFormatUnsupported(UserError):
    code = "UserErrorDiskFormatUnsupported"
    message = "The disk '{disk}' of VM '{name}' has the format '{format}', which Haven cannot back up."
    recommendation = "Convert the disk to raw or qcow2 (qemu-img convert), or exclude it from protection."


class DiskInUse(Conflict):
    code = "UserErrorDiskInUse"
    message = "The disk '{disk}' of VM '{name}' is in use by another process, but the VM does not name a QMP socket."
    recommendation = (
        "Name the QMP socket of the running QEMU in the VM's definition (qmp_socket) so Haven can back it up "
        "live, or stop the VM."
    )


class BackupAlreadyRunning(Conflict):
    code = "UserErrorBackupAlreadyRunning"
    message = "A backup or an extension update of VM '{name}' is already running."
    recommendation = "Wait for the running operation to finish, then retry."


class SnapshotFailed(InternalError):
    code = "SnapshotFailed"
    message = "Taking the point-in-time view of VM '{name}' failed: {reason}."
    recommendation = "Retry the backup; if it keeps failing, check the hypervisor's log for the VM."


# ---- QMP / libvirt ----


class QmpUnavailable(Transient):
    code = "TransientErrorQmpUnavailable"
    message = "The QEMU monitor of VM '{name}' at {path} did not answer: {reason}."
    recommendation = "Check that the VM is running and that its QMP socket path in the definition is right."


class QmpCommandFailed(InternalError):
    code = "QmpCommandFailed"
    message = "QEMU refused '{command}': {reason}."
    recommendation = "Retry the operation; if it keeps failing, check the QEMU version (7.2 or newer) and its log."


class LibvirtUnavailable(Transient):
    code = "TransientErrorLibvirtUnavailable"
    message = "libvirt at '{uri}' cannot be reached: {reason}."
    recommendation = "Start libvirtd (and virtlogd) on the host, or check the connection URI and its permissions."


class NbdReadFailed(Transient):
    code = "TransientErrorNbdReadFailed"
    message = "Reading disk '{disk}' over NBD failed: {reason}."
    recommendation = "Retry the backup; the export may have been stopped while it was read."


# ---- guest agent (the seeds' VM agent) ----


class GuestAgentNotConfigured(PreconditionFailed):
    code = "UserErrorGuestAgentNotConfigured"
    message = "VM '{name}' has no guest agent channel, so Haven cannot talk to a guest agent inside it."
    recommendation = (
        "Add a virtio-serial channel named org.qemu.guest_agent.0 to the VM (libvirt: <channel type='unix'> with "
        "<target type='virtio' name='org.qemu.guest_agent.0'/>; plain QEMU: name its socket as qga_socket in vm.json), "
        "then install qemu-guest-agent in the guest."
    )


class GuestAgentNotResponding(PreconditionFailed):
    code = "UserErrorGuestAgentNotResponding"
    message = "The guest agent of VM '{name}' did not answer within {timeout:g} s ({reason})."
    recommendation = (
        "Install qemu-guest-agent in the guest and make sure it runs (Debian/Ubuntu: apt-get install "
        "qemu-guest-agent; RHEL/Fedora: dnf install qemu-guest-agent; then start the service qemu-guest-agent). "
        "Until then backups are crash-consistent only."
    )


class GuestAgentVersionUnsupported(PreconditionFailed):
    code = "UserErrorGuestAgentVersionUnsupported"
    message = "The guest agent of VM '{name}' is version {version}, older than the minimum {minimum}."
    recommendation = (
        "Update qemu-guest-agent in the guest to {minimum} or newer with the guest's package manager and restart it. "
        "Until then backups are crash-consistent only."
    )


class GuestAgentCommandDisabled(PreconditionFailed):
    code = "UserErrorGuestAgentCommandDisabled"
    message = "The guest agent of VM '{name}' does not allow '{command}'."
    recommendation = (
        "Allow '{command}' in the guest agent's configuration (remove it from block-rpcs / --block-rpcs in "
        "/etc/qemu/qemu-ga.conf) and restart qemu-guest-agent."
    )


class GuestAgentCommandFailed(Transient):
    code = "TransientErrorGuestAgentCommandFailed"
    message = "The guest agent of VM '{name}' failed '{command}': {reason}."
    recommendation = "Retry; if it keeps failing, check the guest agent's log inside the guest and restart it."


class FreezeFailed(Transient):
    code = "TransientErrorFreezeFailed"
    message = "Freezing the file systems of VM '{name}' failed: {reason}."
    recommendation = (
        "The point was taken crash-consistent. Check the guest's file systems and the guest agent's log; a "
        "file system that cannot be frozen (FUSE, some network file systems) prevents consistent points."
    )


# ---- backup extension ----


class ExtensionInstallFailed(Transient):
    code = "TransientErrorExtensionInstallFailed"
    message = "Installing Haven's backup extension {version} into VM '{name}' failed: {reason}."
    recommendation = (
        "Check that the guest agent runs and allows guest-exec and guest-file-* and that the guest's /var/lib is "
        "writable; Haven retries at the next backup."
    )


class ExtensionUpdateInProgress(Conflict):
    code = "UserErrorExtensionUpdateInProgress"
    message = "Haven's backup extension of VM '{name}' is being updated; no backup runs meanwhile."
    recommendation = "Retry the backup when the update has finished (a few seconds)."

"""Errors of instant restore (a VM started on qcow2 overlays over a recovery point served from the vault)."""

from __future__ import annotations

from haven.errors import Conflict, NotFound, PreconditionFailed

__all__ = ["InstantVmNameInUse", "InstantToolMissing", "InstantSessionNotFound", "InstantHostUnsupported",
           "InstantServerFailed", "InstantCommitFailed", "NBDKIT_PACKAGES"]

NBDKIT_PACKAGES = "nbdkit nbdkit-plugin-python"


class InstantVmNameInUse(Conflict):
    code = "UserErrorInstantRestoreNameInUse"
    message = ("A VM named {name!r} already exists on host {host!r}; an instant restore never replaces a VM.")
    recommendation = ("Pick a new name: haven restore instant -s {subscription} -v {vault} --vm {vm} --rp-name {point} "
                      "--target-vm-name {name}-instant")


class InstantToolMissing(PreconditionFailed):
    code = "UserErrorInstantRestoreToolMissing"
    message = "Instant restore serves the recovery point with nbdkit and its Python plugin, and {what} on this host."
    recommendation = f"Install them (as root): apt-get install -y {NBDKIT_PACKAGES}"


class InstantSessionNotFound(NotFound):
    code = "UserErrorInstantRestoreNotFound"
    message = "There is no instant-restored VM named {name!r} in subscription {subscription!r}."
    recommendation = ("Name a VM an instant restore started (its --target-vm-name); the VMs of this server's hosts: haven vm list")


class InstantHostUnsupported(PreconditionFailed):
    code = "UserErrorInstantRestoreHostUnsupported"
    message = "Host {host!r} ({kind}) cannot run an instant restore yet: it runs on the server's own libvirt host only."
    recommendation = ("Restore the VM with a full copy instead: haven restore restore-vm -s {subscription} -v {vault} --vm {vm} "
                      "--rp-name {point} --target-vm-name {name}")


class InstantServerFailed(PreconditionFailed):
    code = "UserErrorInstantRestoreServerFailed"
    message = "The NBD server of the instant restore did not start: {reason}"
    recommendation = f"Check that nbdkit's Python plugin loads (nbdkit python --version), or reinstall it: apt-get install -y --reinstall {NBDKIT_PACKAGES}"


class InstantCommitFailed(PreconditionFailed):
    code = "UserErrorInstantCommitFailed"
    message = "Moving VM {name!r} to local disks failed on disk {disk}: {reason}. The VM keeps running from the vault."
    recommendation = "Run the commit again: haven restore instant commit -s {subscription} --target-vm-name {name}"

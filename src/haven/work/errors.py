"""Errors the host's part of a job raises (what a restore target or a VM refuses)."""

from __future__ import annotations

import os
from pathlib import Path

from haven.errors import Conflict, PreconditionFailed, UserError

__all__ = ["RestoreTargetInvalid", "would_overwrite", "refuse_existing", "RestoreVmNameInUse",
           "ReplaceDisksVmRunning", "ReplaceDisksMismatch", "FileRecoveryToolMissing"]


class RestoreTargetInvalid(UserError):
    code = "UserErrorRestoreTargetInvalid"
    message = "The restore target {target!r} is invalid: {reason}"
    recommendation = "Give an absolute path of a folder on the host (it is created if missing) that holds no files of the same names."


def would_overwrite(out: Path, shown: str) -> RestoreTargetInvalid:
    return RestoreTargetInvalid(target=shown, reason=f"{out} already exists; a restore never overwrites files.")


def refuse_existing(folder: Path, names, fmt: str, shown: str | None = None) -> None:
    """A restore never overwrites a file: refuse if ``folder`` holds NAME.FMT for any name (a
    dangling symlink of that name counts too: it is never written through)."""
    for name in names:
        out = folder / f"{name}.{fmt}"
        if os.path.lexists(out):
            raise would_overwrite(out, shown or str(folder))


class RestoreVmNameInUse(Conflict):
    code = "UserErrorRestoreVmNameInUse"
    message = ("A VM named {name!r} already exists on host {host!r}. Replacing an existing VM is not supported "
               "during restore: a restore never silently replaces a VM.")
    recommendation = ("Delete the existing VM first, or restore under a new name (--target-vm-name). To put the "
                      "recovery point's disks back into the existing VM, use 'haven restore replace-disks'.")
    recommendation_ui = ("Delete the existing VM first, or restore under a new name (the new VM's name field). To put the "
                         "recovery point's disks back into the existing VM, choose Replace disks.")


class ReplaceDisksVmRunning(Conflict):
    code = "UserErrorReplaceDisksVmNotStopped"
    message = "VM {vm!r} is {state}; its disks can be replaced only while it is stopped."
    recommendation = "Shut the VM down (from inside the guest, or 'virsh shutdown {vm}'), wait until it is stopped, then run the replace again."


class ReplaceDisksMismatch(UserError):
    code = "UserErrorReplaceDisksDiskMismatch"
    message = "VM {vm!r} has no disk(s) {disks} that recovery point {point} holds; it has {have}."
    recommendation = "Replace only disks the VM still has (choose them with --disk), or restore the point as a new VM (haven restore restore-vm)."


class FileRecoveryToolMissing(PreconditionFailed):
    code = "UserErrorFileRecoveryToolMissing"
    message = "File recovery needs {tool} on the host, and it is not installed."
    recommendation = "Install it (Debian/Ubuntu: apt-get install qemu-utils coreutils), then mount the recovery point again."

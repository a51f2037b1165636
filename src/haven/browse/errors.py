"""Typed errors of file recovery: a path that is not there, a volume without a readable file system,
and what hostile or damaged images produce (corrupt metadata, directory loops, absurd sizes).

Nothing a file-system reader raises reaches the user as an internal error: ``filesystems.guarded``
turns it into ``FileSystemCorrupt``; the engine's own errors (a chunk that fails authentication)
pass through unchanged.
"""

from __future__ import annotations

from haven.errors import Conflict, NotFound, PreconditionFailed, UserError

__all__ = [
    "BrowseError",
    "PathInvalid",
    "PathNotFound",
    "NotADirectory",
    "NotAFile",
    "VolumeNotFound",
    "VolumeAmbiguous",
    "NoFileSystem",
    "FileSystemCorrupt",
    "VolumeLocked",
    "VolumeKeyInvalid",
    "SymlinkLoop",
    "DirectoryLoop",
    "DirectoryTooLarge",
    "SizeAbsurd",
    "BrowseLimitReached",
]


class BrowseError(Conflict):
    code = "UserErrorFileRecoveryFailed"
    message = "The file systems of disk {disk!r} of recovery point {point!r} could not be read."
    recommendation = "Restore the whole disk instead (haven protection restore-disks) and inspect it with file-system tools."


class PathInvalid(UserError):
    code = "UserErrorFilePathInvalid"
    message = "The path {path!r} is invalid: {reason}"
    recommendation = "Give an absolute path inside the volume, e.g. /etc/nginx (no NUL characters, at most 4096 characters)."


class PathNotFound(NotFound):
    code = "UserErrorFileNotFound"
    message = "No file or folder {path!r} on volume {volume!r} of disk {disk!r} in recovery point {point!r}."
    recommendation = "List the parent folder first: haven restore files ls --vm VM --rp-name {point} --disk {disk} --path PARENT."


class NotADirectory(UserError):
    code = "UserErrorFileNotAFolder"
    message = "{path!r} is not a folder."
    recommendation = "List its parent folder, or download it with 'haven restore files get'."


class NotAFile(UserError):
    code = "UserErrorFileNotDownloadable"
    message = "{path!r} is a {kind}; only files and folders can be downloaded."
    recommendation = "List its folder to see the entry (a symlink shows its target)."


class VolumeNotFound(NotFound):
    code = "UserErrorFileVolumeNotFound"
    message = "Disk {disk!r} of recovery point {point!r} has no volume {volume!r}; it has: {volumes}."
    recommendation = "Pick one of the volumes listed (haven restore files ls --vm VM --rp-name {point} --disk {disk} shows them)."


class VolumeAmbiguous(UserError):
    code = "UserErrorFileVolumeAmbiguous"
    message = "Disk {disk!r} of recovery point {point!r} holds several file systems: {volumes}."
    recommendation = "Name one with --volume (API: volume=…), e.g. --volume {first}."


class NoFileSystem(PreconditionFailed):
    code = "UserErrorNoReadableFileSystem"
    message = "Volume {volume!r} of disk {disk!r} holds no file system Haven can read (ext2/3/4, XFS, Btrfs, NTFS, FAT)."
    recommendation = "Restore the disk (haven protection restore-disks) or mount it over NBD (haven restore files mount-rp) and use the guest's own tools."


class FileSystemCorrupt(BrowseError):
    code = "UserErrorFileSystemCorrupt"
    message = "The {fs} file system on volume {volume!r} of disk {disk!r} is damaged or not what it claims to be: {reason}"


class VolumeLocked(PreconditionFailed):
    code = "UserErrorFileVolumeEncrypted"
    message = ("Volume {volume!r} of disk {disk!r} is encrypted (LUKS) and its recovery point holds no key for it "
               "(Haven keeps BEKs only for VMs encrypted with a BEK and a KEK of its key vault).")
    recommendation = ("Restore the disk (haven protection restore-disks) and open it with its key (cryptsetup open), "
                      "or name the VM's BEK and KEK in its definition so that its next points carry them (see docs/keyvault.md).")


class VolumeKeyInvalid(BrowseError):
    code = "UserErrorFileVolumeKeyInvalid"
    message = "None of the {tried} key(s) kept with the recovery point opens the encrypted (LUKS) volume {volume!r} of disk {disk!r}."
    recommendation = ("The disk was re-keyed without updating its BEK secret: restore the disk (haven protection restore-disks) and "
                      "open it with its current key (cryptsetup open), then store that key as the VM's BEK (haven keyvault secret set).")


class SymlinkLoop(BrowseError):
    code = "UserErrorFileSymlinkLoop"
    message = "Resolving {path!r} followed more than {max} symbolic links (a loop)."
    recommendation = "Give the path without going through the symlinks (list the folders to see their targets)."


class DirectoryLoop(BrowseError):
    code = "UserErrorFileDirectoryLoop"
    message = "Folder {path!r} contains itself (a loop in the file system's directories); the image is damaged or hostile."
    recommendation = "Download the files you need one folder below the loop, or restore the whole disk and repair it with fsck."


class DirectoryTooLarge(BrowseError):
    code = "UserErrorFileFolderTooLarge"
    message = "Folder {path!r} has more than {max} entries (or claims {size} bytes of entries); it is not read whole."
    recommendation = "Use 'haven restore files find' for the name you need, or restore the whole disk."


class SizeAbsurd(BrowseError):
    code = "UserErrorFileSizeAbsurd"
    message = "{path!r} claims {size} bytes, more than any file Haven reads ({max}); the file system is damaged or hostile."
    recommendation = "Restore the whole disk and check it with fsck."


class BrowseLimitReached(BrowseError):
    code = "UserErrorFileRecoveryLimit"
    message = "{what} stopped at its limit ({limit}) under {path!r}."
    recommendation = "Narrow it to a deeper folder (--path), or restore the whole disk."

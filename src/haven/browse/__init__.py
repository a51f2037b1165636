"""File recovery straight from the vault: the volumes and file systems of a recovery point's disk,
read in the server with pure-Python readers (no mount, no kernel module, no root).

``open_volume(DiskImage, volume)`` gives a ``FileSystem`` (stat, list, open, walk by path); this
package uses only the engine (to read the disk) and the error classes.
"""

from .entry import DIR, FILE, OTHER, SYMLINK, Entry
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors
from .filesystems import MAX_ENTRIES, FileSystem, normalise, open_filesystem
from .volumes import Volume, find_volumes, open_volume, pick_volume

__all__ = ["Entry", "FILE", "DIR", "SYMLINK", "OTHER", "FileSystem", "Volume", "find_volumes", "open_volume", "pick_volume",
           "open_filesystem", "normalise", "MAX_ENTRIES", *_errors]

"""The hypervisor layer: VMs on a host, their disks, their guest agent, and point-in-time views.

``open_adapter(uri)`` gives the adapter for a host:

* ``folder:///abs/path``          a folder of image VMs (:mod:`haven.hypervisor.folder`)
* ``qemu:///system``, ``qemu:///session``, ``test:///default``, ``qemu+ssh://…``   libvirt
  (:mod:`haven.hypervisor.libvirt_adapter`)

Every adapter lists and describes VMs, takes a :class:`Snapshot` (a point-in-time view whose
``disks`` are :class:`~haven.engine.source.DiskSource`), defines a VM from restored disks, reports
the guest agent, and installs Haven's backup extension into the guest.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from haven.hypervisor.errors import HypervisorUriInvalid
from haven.hypervisor.extension import EXTENSION_VERSION, ExtensionConfig, ExtensionState
from haven.hypervisor.types import (
    DEFAULT_MIN_AGENT_VERSION,
    ConsistencyLevel,
    DiskInfo,
    GuestAgentInfo,
    HypervisorAdapter,
    PowerState,
    Snapshot,
    VmInfo,
)

__all__ = [
    "open_adapter",
    "adapter_options",
    "HypervisorAdapter",
    "VmInfo",
    "DiskInfo",
    "GuestAgentInfo",
    "Snapshot",
    "PowerState",
    "ConsistencyLevel",
    "ExtensionConfig",
    "ExtensionState",
    "EXTENSION_VERSION",
    "DEFAULT_MIN_AGENT_VERSION",
]

LIBVIRT_SCHEMES = ("qemu", "test", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "qemu+libssh2", "qemu+libssh")


def adapter_options(uri: str, allowed_disk_roots: tuple = (), min_agent_version: str | None = None) -> dict[str, Any]:
    """The settings an adapter of ``uri`` takes from ``haven.toml``: image folders, ``[folder] allowed_disk_roots``;
    every adapter, ``min_guest_agent_version`` (the one minimum version of the guest agent)."""
    out: dict[str, Any] = {"allowed_disk_roots": tuple(allowed_disk_roots)} if urlparse(uri).scheme == "folder" else {}
    if min_agent_version:
        out["min_agent_version"] = min_agent_version
    return out


def open_adapter(uri: str, **options: Any) -> HypervisorAdapter:
    """The adapter for ``uri``; ``options`` go to its constructor (agent_timeout, min_agent_version, scratch_dir …)."""
    parsed = urlparse(uri)
    if parsed.scheme == "folder":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise HypervisorUriInvalid(uri=uri, reason="a folder URI needs an absolute path: folder:///abs/path")
        from haven.hypervisor.folder import ImageFolderAdapter

        return ImageFolderAdapter(parsed.path, **options)
    if parsed.scheme in LIBVIRT_SCHEMES:
        from haven.hypervisor.libvirt_adapter import LibvirtAdapter

        return LibvirtAdapter(uri, **options)
    raise HypervisorUriInvalid(uri=uri, reason=f"unknown scheme '{parsed.scheme or '(none)'}'")

"""A stopped VM's disks, read as they are (crash-consistent): the image's facts from ``qemu-img info``,
raw files read with ``SEEK_DATA``/``SEEK_HOLE``, qcow2 through a read-only ``qemu-nbd`` and its
``base:allocation`` block status; the guest agent of a stopped VM does not answer. Shared by the
image-folder and libvirt adapters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from haven.hypervisor.errors import GuestAgentNotConfigured
from haven.hypervisor.sources import FileDiskSource, NbdDiskSource, QemuNbdServer
from haven.hypervisor.types import DiskInfo, GuestAgentInfo, Snapshot

__all__ = ["OfflineSnapshot", "image_info", "offline_snapshot", "stopped_agent_info"]


def image_info(path: str) -> dict[str, Any]:
    """``qemu-img info`` of an image (``-U``: the image may be open in a running QEMU)."""
    res = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True)
    if res.returncode != 0:
        raise OSError(res.stderr.strip() or f"qemu-img info {path} failed")
    return json.loads(res.stdout)


def _image_bitmaps(path: str) -> dict[str, list[str]]:
    try:
        data = image_info(path).get("format-specific", {}).get("data", {})
    except OSError:
        return {}
    return {b["name"]: list(b.get("flags", [])) for b in data.get("bitmaps", []) or []}


class OfflineSnapshot(Snapshot):
    """A stopped VM's disks, read directly. Crash-consistent; ``changed_extents()`` is None."""

    def __init__(self, vm: str):
        super().__init__(vm)
        self.power_state = "stopped"
        self._servers: list[QemuNbdServer] = []
        self._scratch: str | None = None  # made only for disks served over NBD (raw ones are read directly)

    def add_disk(self, disk: DiskInfo) -> None:
        if disk.format == "raw":
            self.disks.append(FileDiskSource(disk.name, disk.path, "raw", size=disk.size))
            return
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="haven-offline-")
        sock = os.path.join(self._scratch, f"{disk.name}.sock")
        server = QemuNbdServer(disk.path, disk.format, sock, disk.name, vm=self.vm, disk=disk.name)
        self._servers.append(server)
        self.disks.append(NbdDiskSource(disk.name, sock, disk.name, size=disk.size, format=disk.format))

    def _release(self, ok: bool) -> None:
        for d in self.disks:
            d.close()  # type: ignore[attr-defined]
        for s in self._servers:
            s.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def offline_snapshot(name: str, disks: list[DiskInfo], previous: str | None) -> OfflineSnapshot:
    """The point-in-time view of a stopped VM: its images as they are, crash-consistent."""
    snap = OfflineSnapshot(name)
    snap.previous_checkpoint = previous
    snap.consistency = "crash"
    snap.warnings.append(
        f"VM '{name}' is stopped: its disks were read as they are; the recovery point is crash-consistent."
    )
    try:
        for d in disks:
            snap.add_disk(d)
    except BaseException:
        snap.release(ok=False)
        raise
    # A stopped VM changes nothing: a persistent bitmap of the previous checkpoint (qcow2, cleanly
    # closed) keeps recording when the VM starts again, so it stays valid as the next backup's base.
    if previous and disks:
        bitmaps = [_image_bitmaps(d.path) if d.format == "qcow2" else {} for d in disks]
        if all(previous in b and "in-use" not in b[previous] for b in bitmaps):
            snap.checkpoint = previous
    return snap


def stopped_agent_info(name: str, has_channel: bool, min_version: str) -> GuestAgentInfo:
    info = GuestAgentInfo(present=has_channel, minimum_version=min_version)
    if not has_channel:
        err = GuestAgentNotConfigured(name=name)
        info.problem_code, info.problem, info.recommendation = err.code, err.text, err.fix
    return info

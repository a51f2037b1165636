"""Live point-in-time views of a QEMU VM over QMP: fleecing, persistent dirty bitmaps, NBD export.

For each included disk (its top block node ``N``)::

    blockdev-add   fleece qcow2 (scratch file) with backing = N
    [guest: pre-scripts, fsfreeze]
    transaction:   block-dirty-bitmap-add  N/<new checkpoint>   (persistent on qcow2)
                   block-dirty-bitmap-disable N/<previous checkpoint>   (when it exists)
                   blockdev-backup N -> fleece, sync=none      (copy-before-write: the point in time)
    [guest: thaw, post-scripts]
    nbd-server-start (unix socket), block-export-add fleece [bitmaps: previous]

The export then reads the disk as it was at the transaction; ``base:allocation`` gives the data
ranges and ``qemu:dirty-bitmap:<previous>`` the ranges changed since the previous checkpoint.

Release: exports, server, jobs and fleece nodes are removed. On success the previous bitmap is
dropped (the new one tracks from now on); on failure the new bitmap is merged back into the
previous one and that one re-enabled, so the previous checkpoint stays usable.

A previous checkpoint whose bitmap is gone (VM restarted with a raw disk, unclean shutdown made it
inconsistent, disk replaced) sets ``tracking_lost``: that disk's ``changed_extents()`` is None.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from haven.hypervisor.errors import QmpCommandFailed, SnapshotFailed
from haven.hypervisor.guest import Quiescer
from haven.hypervisor.qmp import QmpClient, QmpConnectionError, QmpError
from haven.hypervisor.sources import NbdDiskSource
from haven.hypervisor.types import DiskInfo, Snapshot

__all__ = ["LiveDisk", "QmpLiveSnapshot", "cleanup_leftovers", "new_checkpoint_name", "CHECKPOINT_PREFIX", "find_block_node"]

CHECKPOINT_PREFIX = "haven-"


def new_checkpoint_name() -> str:
    return f"{CHECKPOINT_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


@dataclass
class LiveDisk:
    info: DiskInfo
    node: str  # the top block node the guest's device reads from


def find_block_node(qmp: QmpClient, path: str) -> tuple[str, int] | None:
    """The top node (and virtual size) of the device whose image is ``path``."""
    want = os.path.realpath(path)
    for dev in qmp.block_devices():
        ins = dev.get("inserted")
        if not ins:
            continue
        names = {ins.get("file", ""), ins.get("image", {}).get("filename", "")}
        if any(n and not n.startswith("json:") and os.path.realpath(n) == want for n in names):
            return ins["node-name"], int(ins["image"]["virtual-size"])
    return None


def cleanup_leftovers(qmp: QmpClient) -> list[str]:
    """Remove the exports, jobs and fleece nodes a crashed earlier backup left in QEMU (call it before
    looking up the disks' nodes: a leftover fleecing job keeps a copy-before-write filter on top of
    the disk). Returns what was removed."""

    def attempt(command: str, **args: Any) -> bool:
        try:
            qmp.execute(command, **args)
            return True
        except QmpError:
            return False

    def wait(event: str, match) -> None:
        try:
            qmp.wait_event(event, timeout=60, match=match)
        except QmpConnectionError:
            pass

    removed: list[str] = []
    try:
        exports = qmp.execute("query-block-exports")
    except QmpError:
        exports = []
    for e in exports:
        if str(e.get("id", "")).startswith("haven-export-") and attempt("block-export-del", id=e["id"], mode="hard"):
            wait("BLOCK_EXPORT_DELETED", lambda ev, x=e["id"]: ev["data"].get("id") == x)
            removed.append(e["id"])
    if removed:
        attempt("nbd-server-stop")
    for job in qmp.execute("query-block-jobs"):
        if str(job.get("device", "")).startswith("haven-fleece-"):
            if attempt("block-job-cancel", device=job["device"], force=True):
                wait("BLOCK_JOB_CANCELLED", lambda ev, j=job["device"]: ev["data"].get("device") == j)
            removed.append(job["device"])
    nodes = qmp.named_nodes()
    scratch = {os.path.dirname(str(n.get("file", ""))) for n in nodes
               if n.get("drv") == "file" and str(n.get("file", "")).endswith(".fleece.qcow2")}
    for node in nodes:
        name = str(node.get("node-name", ""))
        if name.startswith("haven-fleece-") and attempt("blockdev-del", **{"node-name": name}):
            removed.append(name)
    if removed:
        for folder in scratch:  # the crashed backup's scratch folder
            if os.path.basename(folder).startswith("haven-live-"):
                shutil.rmtree(folder, ignore_errors=True)
    return removed


def _node_bitmaps(qmp: QmpClient, node: str) -> dict[str, dict[str, Any]]:
    for n in qmp.named_nodes():
        if n.get("node-name") == node:
            return {b["name"]: b for b in n.get("dirty-bitmaps", []) if "name" in b}
    return {}


class QmpLiveSnapshot(Snapshot):
    """See the module docstring. Build it with :meth:`take`."""

    def __init__(self, vm: str, qmp: QmpClient, scratch: str):
        super().__init__(vm)
        self.power_state = "running"
        self._qmp = qmp
        self._scratch = scratch
        self._nodes: dict[str, str] = {}  # disk name -> node
        self._fleece: dict[str, str] = {}  # disk name -> fleece node
        self._jobs: dict[str, str] = {}  # disk name -> job id
        self._exports: dict[str, str] = {}  # disk name -> export id
        self._prev_present: dict[str, bool] = {}
        self._stale: dict[str, list[str]] = {}
        self._server = False
        self._bitmap_added: dict[str, bool] = {}

    # ---- taking it ----

    @classmethod
    def take(
        cls,
        vm: str,
        qmp: QmpClient,
        disks: list[LiveDisk],
        quiescer: Quiescer,
        previous_checkpoint: str | None,
        scratch_dir: str | None = None,
        pre_warnings: list[str] | None = None,
    ) -> QmpLiveSnapshot:
        scratch = tempfile.mkdtemp(prefix="haven-live-", dir=scratch_dir)
        snap = cls(vm, qmp, scratch)
        snap.warnings.extend(pre_warnings or [])
        try:
            snap._take(disks, quiescer, previous_checkpoint)
        except BaseException:
            snap.release(ok=False)
            raise
        return snap

    def _cmd(self, command: str, **args: Any) -> Any:
        try:
            return self._qmp.execute(command, **args)
        except QmpError as exc:
            raise QmpCommandFailed(command=command, reason=f"{exc.error_class}: {exc.desc}") from exc
        except QmpConnectionError as exc:
            raise SnapshotFailed(name=self.vm, reason=str(exc)) from exc

    def _take(self, disks: list[LiveDisk], quiescer: Quiescer, previous: str | None) -> None:
        self.previous_checkpoint = previous
        self.checkpoint = new_checkpoint_name()
        sizes: dict[str, int] = {}
        for d in disks:
            self._nodes[d.info.name] = d.node
            bitmaps = _node_bitmaps(self._qmp, d.node)
            prev = bitmaps.get(previous) if previous else None
            if prev and not prev.get("recording", True) and not prev.get("inconsistent") and not prev.get("busy"):
                prev = self._revive(d.node, previous, bitmaps)
            usable = bool(prev) and not prev.get("inconsistent") and prev.get("recording", True) and not prev.get("busy")
            if prev and not usable:  # present but unusable: drop it, track afresh
                try:
                    self._cmd("block-dirty-bitmap-remove", node=d.node, name=previous)
                except QmpCommandFailed:
                    pass
            self._prev_present[d.info.name] = usable
            self._stale[d.info.name] = [b for b in bitmaps if b.startswith(CHECKPOINT_PREFIX) and b != previous]
            if previous and not usable:
                self.tracking_lost = True
                self.warnings.append(
                    f"Changed-block tracking of disk '{d.info.name}' was lost (checkpoint {previous} is gone: the VM "
                    "restarted, the disk was replaced, or the host stopped uncleanly). This backup reads the whole disk "
                    "and stores only what changed; tracking starts again from this point."
                )
            sizes[d.info.name] = d.info.size
            fleece = f"haven-fleece-{d.info.name}"
            path = os.path.join(self._scratch, f"{d.info.name}.fleece.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(d.info.size)], check=True)
            self._cmd("blockdev-add", driver="qcow2", **{"node-name": fleece},
                      file={"driver": "file", "filename": path}, backing=d.node)
            self._fleece[d.info.name] = fleece

        actions: list[dict[str, Any]] = []
        for d in disks:
            name = d.info.name
            actions.append({"type": "block-dirty-bitmap-add", "data": {
                "node": d.node, "name": self.checkpoint, "persistent": d.info.format == "qcow2"}})
            if self._prev_present[name]:
                actions.append({"type": "block-dirty-bitmap-disable", "data": {"node": d.node, "name": previous}})
            job = f"haven-fleece-{name}"
            actions.append({"type": "blockdev-backup", "data": {
                "device": d.node, "target": self._fleece[name], "sync": "none", "job-id": job}})

        quiescer.prepare()
        with quiescer.hold():
            self._cmd("transaction", actions=actions)
            for d in disks:
                self._bitmap_added[d.info.name] = True
                self._jobs[d.info.name] = f"haven-fleece-{d.info.name}"
        quiescer.finish()
        self.consistency = quiescer.consistency
        self.warnings.extend(quiescer.warnings)
        self.extension = quiescer.extension
        self.frozen_seconds = quiescer.frozen_seconds

        sock = os.path.join(self._scratch, "nbd.sock")
        self._cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        self._server = True
        for d in disks:
            name = d.info.name
            args: dict[str, Any] = {"type": "nbd", "id": f"haven-export-{name}", "node-name": self._fleece[name],
                                    "name": name, "writable": False}
            if self._prev_present[name]:
                args["bitmaps"] = [previous]
            self._cmd("block-export-add", **args)
            self._exports[name] = args["id"]
            self.disks.append(NbdDiskSource(
                name, sock, name, size=sizes[name], format=d.info.format,
                bitmap=previous if self._prev_present[name] else None,
            ))

    def _revive(self, node: str, previous: str, bitmaps: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """A disabled previous bitmap is one a crashed backup froze; the bitmap that backup started at
        the same instant holds everything since. Merge it back so the previous checkpoint is whole."""
        followers = [n for n, b in bitmaps.items() if n.startswith(CHECKPOINT_PREFIX) and n != previous
                     and b.get("recording") and not b.get("inconsistent") and not b.get("busy")]
        if not followers:
            return None
        try:
            self._cmd("block-dirty-bitmap-enable", node=node, name=previous)
            self._cmd("block-dirty-bitmap-merge", node=node, target=previous, bitmaps=followers)
        except QmpCommandFailed:
            return None
        return {**bitmaps[previous], "recording": True}

    # ---- releasing it ----

    def _try(self, command: str, **args: Any) -> bool:
        try:
            self._qmp.execute(command, **args)
            return True
        except (QmpError, QmpConnectionError):
            return False

    def _release(self, ok: bool) -> None:
        for src in self.disks:
            close = getattr(src, "close", None)
            if close:
                close()
        try:
            for name, export in self._exports.items():
                if self._try("block-export-del", id=export):
                    self._wait("BLOCK_EXPORT_DELETED", lambda e, x=export: e["data"].get("id") == x)
            if self._server:
                self._try("nbd-server-stop")
            for name, job in self._jobs.items():
                if self._try("block-job-cancel", device=job, force=True):
                    self._wait("BLOCK_JOB_CANCELLED", lambda e, j=job: e["data"].get("device") == j)
            for name, fleece in self._fleece.items():
                self._try("blockdev-del", **{"node-name": fleece})
            for name, node in self._nodes.items():
                if not self._bitmap_added.get(name):
                    continue
                prev = self.previous_checkpoint
                if ok:
                    if prev and self._prev_present.get(name):
                        self._try("block-dirty-bitmap-remove", node=node, name=prev)
                    for stale in self._stale.get(name, []):
                        self._try("block-dirty-bitmap-remove", node=node, name=stale)
                else:
                    # keep the previous checkpoint valid: it must also cover what changed since this attempt
                    if prev and self._prev_present.get(name):
                        self._try("block-dirty-bitmap-enable", node=node, name=prev)
                        self._try("block-dirty-bitmap-merge", node=node, target=prev, bitmaps=[self.checkpoint])
                    self._try("block-dirty-bitmap-remove", node=node, name=self.checkpoint)
            if not ok:
                self.checkpoint = None
        finally:
            self._qmp.close()
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _wait(self, event: str, match) -> None:
        try:
            self._qmp.wait_event(event, timeout=60, match=match)
        except QmpConnectionError:
            pass

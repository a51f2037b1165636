"""libvirt/QEMU domains (``libvirt-python``): describe, back up live in pull mode, define from disks.

A running domain is backed up with ``virDomainBackupBegin`` in pull mode: libvirt starts the
fleecing itself, exports every included disk over NBD on a unix socket, and creates a checkpoint
(one persistent dirty bitmap per qcow2 disk) at the same instant. With a previous checkpoint the
backup is incremental and the export carries ``qemu:dirty-bitmap:backup-<disk>``. The guest is
quiesced around ``backupBegin`` through the guest agent (``virDomainFSFreeze``/``FSThaw``, and the
backup extension's scripts through ``qemu-agent-command``).

Checkpoints: after a successful backup only the newest Haven checkpoint is kept (deleting older
ones merges their bitmaps into it); after a failed one the new checkpoint is deleted, which merges
its bitmap into the previous one, so the previous checkpoint still covers every change.

A stopped domain's disks are read directly (crash-consistent), like an image folder's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

from haven.hypervisor.errors import (
    DiskFormatUnsupported,
    DiskNotFound,
    LibvirtUnavailable,
    SnapshotFailed,
    VmAlreadyExists,
    VmDefinitionInvalid,
    VmNotFound,
)
from haven.hypervisor.definitions import AGENT_CHANNEL, disks_of, domain_xml_from_definition, encryption_of, nics_of, rewrite_domain
from haven.hypervisor.extension import ExtensionConfig
from haven.hypervisor.offline import image_info, offline_snapshot, stopped_agent_info
from haven.hypervisor.guest import Quiescer, probe_agent
from haven.hypervisor.libvirt_agent import LibvirtGuestAgent, libvirt_module
from haven.hypervisor.live import CHECKPOINT_PREFIX, new_checkpoint_name
from haven.hypervisor.qga import GuestAgent
from haven.hypervisor.sources import NbdDiskSource
from haven.hypervisor.types import (
    DEFAULT_MIN_AGENT_VERSION,
    DiskInfo,
    GuestAgentInfo,
    HypervisorAdapter,
    PowerState,
    Snapshot,
    VmInfo,
)

__all__ = ["LibvirtAdapter", "LibvirtBackupSnapshot"]

# ---- the snapshot ----


class LibvirtBackupSnapshot(Snapshot):
    def __init__(self, vm: str, dom: Any, scratch: str):
        super().__init__(vm)
        self.power_state = "running"
        self._dom = dom
        self._scratch = scratch
        self._job = False
        self._created_checkpoint = False

    def _release(self, ok: bool) -> None:
        libvirt = libvirt_module()
        for d in self.disks:
            d.close()  # type: ignore[attr-defined]
        try:
            if self._job:
                try:
                    self._dom.abortJob()
                except libvirt.libvirtError:
                    pass
            if self._created_checkpoint and self.checkpoint:
                if ok:
                    for cp in self._dom.listAllCheckpoints():
                        if cp.getName().startswith(CHECKPOINT_PREFIX) and cp.getName() != self.checkpoint:
                            _delete_checkpoint(cp)
                else:
                    try:
                        # merges its bitmap into the previous checkpoint, which stays usable
                        _delete_checkpoint(self._dom.checkpointLookupByName(self.checkpoint))
                    except libvirt.libvirtError:
                        pass
                    self.checkpoint = None
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _delete_checkpoint(cp: Any) -> None:
    libvirt = libvirt_module()
    try:
        cp.delete(0)
    except libvirt.libvirtError:
        try:  # the bitmap is gone already: drop the metadata
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        except libvirt.libvirtError:
            pass


_STATES: dict[int, PowerState] = {}


def _power_state(dom: Any) -> PowerState:
    libvirt = libvirt_module()
    if not _STATES:
        _STATES.update({
            libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "running",
            libvirt.VIR_DOMAIN_SHUTOFF: "stopped", libvirt.VIR_DOMAIN_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
        })
    return _STATES.get(dom.state()[0], "unknown")


class LibvirtAdapter(HypervisorAdapter):
    kind = "libvirt"

    def __init__(
        self,
        uri: str = "qemu:///system",
        *,
        scratch_dir: str | None = None,
        agent_timeout: float = 30.0,
        min_agent_version: str = DEFAULT_MIN_AGENT_VERSION,
    ):
        super().__init__()
        libvirt = libvirt_module()
        self.uri = uri
        self.scratch_dir = scratch_dir
        self.agent_timeout = agent_timeout
        self.min_agent_version = min_agent_version
        libvirt.registerErrorHandler(lambda *_: None, None)
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailable(uri=uri, reason=str(exc)) from exc

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def _dom(self, name: str) -> Any:
        libvirt = libvirt_module()
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise VmNotFound(name=name, host=self.uri) from exc
            raise LibvirtUnavailable(uri=self.uri, reason=str(exc)) from exc

    def _disk_infos(self, name: str, dom: Any, xml: ET.Element) -> list[DiskInfo]:
        libvirt = libvirt_module()
        out = []
        for d in disks_of(xml):
            size = None
            try:
                size = int(dom.blockInfo(d["name"])[0])
            except libvirt.libvirtError:
                pass
            if size is None and d["path"] and os.path.exists(d["path"]):
                size = int(image_info(d["path"]).get("virtual-size", 0))
            out.append(DiskInfo(d["name"], d["path"] or "", d["format"], size or 0))
        return out

    def _has_channel(self, xml: ET.Element) -> bool:
        return any(t.get("name") == AGENT_CHANNEL for t in xml.findall("./devices/channel/target"))

    def _agent_connector(self, dom: Any, xml: ET.Element):
        if not self._has_channel(xml):
            return None
        return lambda: LibvirtGuestAgent(dom, timeout=max(self.agent_timeout, 60.0), connect_timeout=self.agent_timeout)

    # ---- the interface ----

    def list_vms(self) -> list[VmInfo]:
        return [self.describe(d.name(), probe_guest=False) for d in sorted(self.conn.listAllDomains(), key=lambda d: d.name())]

    def describe(self, name: str, probe_guest: bool = True) -> VmInfo:
        dom = self._dom(name)
        text = dom.XMLDesc(0)
        xml = ET.fromstring(text)
        state = _power_state(dom)
        disks_raw = disks_of(xml)
        agent: GuestAgentInfo
        connector = self._agent_connector(dom, xml)
        if state == "running" and probe_guest:
            agent, ga = probe_agent(name, connector, min_version=self.min_agent_version, timeout=self.agent_timeout)
            if ga is not None:
                ga.close()
        else:
            agent = stopped_agent_info(name, connector is not None, self.min_agent_version)
        mem = xml.find("memory")
        memory_mib = None
        if mem is not None and mem.text:
            unit = mem.get("unit", "KiB")
            factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "b": 1 / 2**20, "bytes": 1 / 2**20}.get(unit, 1 / 1024)
            memory_mib = int(int(mem.text) * factor)
        vcpu = xml.find("vcpu")
        return VmInfo(
            name=name,
            uuid=dom.UUIDString(),
            power_state=state,
            disks=self._disk_infos(name, dom, xml),
            nics=nics_of(xml),
            guest_agent=agent,
            definition=text,
            encryption=encryption_of(xml, disks_raw),
            memory_mib=memory_mib,
            vcpus=int(vcpu.text) if vcpu is not None and vcpu.text else None,
            host=self.uri,
        )

    def snapshot(
        self,
        name: str,
        previous_checkpoint: str | None = None,
        include_disks: list[str] | None = None,
        freeze_timeout: float = 60.0,
        extension: ExtensionConfig | None = None,
    ) -> Snapshot:
        dom = self._dom(name)
        xml = ET.fromstring(dom.XMLDesc(0))
        disks = self._disk_infos(name, dom, xml)
        names = [d.name for d in disks]
        if include_disks is not None:
            for want in include_disks:
                if want not in names:
                    raise DiskNotFound(name=name, disk=want, reason="the domain has no such disk", available=", ".join(names))
        selected = [d for d in disks if include_disks is None or d.name in include_disks]
        for d in selected:
            if d.format not in ("raw", "qcow2"):
                raise DiskFormatUnsupported(name=name, disk=d.name, format=d.format)
        release = self.acquire_vm(name, "backup")
        try:
            if _power_state(dom) in ("running", "paused"):
                snap = self._live(name, dom, xml, disks, selected, previous_checkpoint, freeze_timeout, extension)
            else:
                snap = offline_snapshot(name, selected, previous_checkpoint)
                if snap.checkpoint and not self._checkpoint_exists(dom, snap.checkpoint):
                    snap.checkpoint = None
        except BaseException:
            release()
            raise
        snap.on_release(release)
        return snap

    def _checkpoint_exists(self, dom: Any, name: str) -> bool:
        libvirt = libvirt_module()
        try:
            dom.checkpointLookupByName(name)
            return True
        except libvirt.libvirtError:
            return False

    def _scratch(self) -> str:
        scratch = tempfile.mkdtemp(prefix="haven-lv-", dir=self.scratch_dir)
        # under qemu:///system QEMU runs as its own user and must create the NBD socket here
        if os.geteuid() == 0 and self.uri.endswith("/system"):
            try:
                qemu_user = pwd.getpwnam("libvirt-qemu")
            except KeyError:
                # never world-writable: without QEMU's own user, root's QEMU writes here as root
                return scratch
            os.chown(scratch, qemu_user.pw_uid, qemu_user.pw_gid)
        return scratch

    def _live(self, name, dom, xml, disks, selected, previous, freeze_timeout, extension) -> Snapshot:
        libvirt = libvirt_module()
        scratch = self._scratch()
        snap = LibvirtBackupSnapshot(name, dom, scratch)
        snap.previous_checkpoint = previous
        try:
            incremental = previous if previous and self._checkpoint_exists(dom, previous) else None
            if previous and not incremental:
                snap.tracking_lost = True
            snap.checkpoint = new_checkpoint_name()
            sock = os.path.join(scratch, "nbd.sock")
            chosen = {d.name for d in selected}
            qcow2 = {d.name for d in selected if d.format == "qcow2"}

            def backup_xml(inc: str | None) -> str:
                root = ET.Element("domainbackup", mode="pull")
                if inc:
                    ET.SubElement(root, "incremental").text = inc
                ET.SubElement(root, "server", transport="unix", socket=sock)
                els = ET.SubElement(root, "disks")
                for d in disks:
                    if d.name in chosen:
                        e = ET.SubElement(els, "disk", name=d.name, backup="yes", type="file")
                        ET.SubElement(e, "scratch", file=os.path.join(scratch, f"{d.name}.scratch"))
                    else:
                        ET.SubElement(els, "disk", name=d.name, backup="no")
                return ET.tostring(root, encoding="unicode")

            cp = ET.Element("domaincheckpoint")
            ET.SubElement(cp, "name").text = snap.checkpoint
            ET.SubElement(cp, "description").text = "Haven backup checkpoint"
            cpd = ET.SubElement(cp, "disks")
            for d in disks:
                ET.SubElement(cpd, "disk", name=d.name, checkpoint="bitmap" if d.name in qcow2 else "no")
            checkpoint_xml = ET.tostring(cp, encoding="unicode") if qcow2 else None

            info, agent = probe_agent(name, self._agent_connector(dom, xml), min_version=self.min_agent_version,
                                      timeout=self.agent_timeout)
            quiescer = Quiescer(name, agent, info, extension=extension, freeze_timeout=freeze_timeout)
            quiescer.prepare()
            with quiescer.hold():
                try:
                    dom.backupBegin(backup_xml(incremental), checkpoint_xml, 0)
                except libvirt.libvirtError as exc:
                    if not incremental:
                        raise SnapshotFailed(name=name, reason=str(exc)) from exc
                    # the checkpoint exists but its bitmap does not: start over with a full backup
                    _delete_checkpoint(dom.checkpointLookupByName(incremental))
                    incremental = None
                    snap.tracking_lost = True
                    try:
                        dom.backupBegin(backup_xml(None), checkpoint_xml, 0)
                    except libvirt.libvirtError as exc2:
                        raise SnapshotFailed(name=name, reason=str(exc2)) from exc2
                snap._job = True
                snap._created_checkpoint = checkpoint_xml is not None
            quiescer.finish()
            if checkpoint_xml is None:
                snap.checkpoint = None
                snap.warnings.append("No qcow2 disk: changed-block tracking needs qcow2; every backup reads all data.")
            snap.consistency = quiescer.consistency
            snap.warnings.extend(quiescer.warnings)
            snap.extension = quiescer.extension
            snap.frozen_seconds = quiescer.frozen_seconds
            if snap.tracking_lost:
                snap.warnings.append(
                    f"Changed-block tracking was lost (checkpoint {previous} is gone: the VM was redefined, the disk "
                    "replaced, or the host stopped uncleanly). This backup reads every disk and stores only what "
                    "changed; tracking starts again from this point."
                )
            if agent is not None:
                agent.close()
            exports = ET.fromstring(dom.backupGetXMLDesc(0))
            by_name = {e.get("name"): e for e in exports.findall("./disks/disk")}
            for d in selected:
                e = by_name.get(d.name)
                export = (e.get("exportname") if e is not None else None) or d.name
                bitmap = None
                if incremental:
                    bitmap = (e.get("exportbitmap") if e is not None else None) or f"backup-{d.name}"
                snap.disks.append(NbdDiskSource(d.name, sock, export, size=d.size, format=d.format, bitmap=bitmap))
        except BaseException:
            snap.release(ok=False)
            raise
        return snap

    def define_vm(self, name: str, disk_paths: dict[str, str], definition: Any = None) -> VmInfo:
        libvirt = libvirt_module()
        try:
            self.conn.lookupByName(name)
            raise VmAlreadyExists(name=name, host=self.uri)
        except libvirt.libvirtError:
            pass
        formats = {}
        for dname, path in disk_paths.items():
            if not os.path.exists(path):
                raise DiskNotFound(name=name, disk=dname, reason=f"{path} does not exist", available=", ".join(disk_paths))
            formats[dname] = image_info(path).get("format", "raw")
        if isinstance(definition, dict):
            text = domain_xml_from_definition(name, {k: (os.path.abspath(p), formats[k]) for k, p in disk_paths.items()},
                                              definition)
        elif isinstance(definition, str):
            text = rewrite_domain(name, definition, disk_paths, formats)
        else:
            text = domain_xml_from_definition(name, {k: (os.path.abspath(p), formats[k]) for k, p in disk_paths.items()}, {})
        try:
            self.conn.defineXML(text)
        except libvirt.libvirtError as exc:
            raise VmDefinitionInvalid(name=name, reason=str(exc), path="(domain XML)") from exc
        return self.describe(name, probe_guest=False)

    def guest_agent_status(self, name: str) -> GuestAgentInfo:
        info, agent = self._open_agent(name)
        if agent is not None:
            agent.close()
        return info

    def _open_agent(self, name: str) -> tuple[GuestAgentInfo, GuestAgent | None]:
        dom = self._dom(name)
        xml = ET.fromstring(dom.XMLDesc(0))
        connector = self._agent_connector(dom, xml)
        if _power_state(dom) != "running":
            return stopped_agent_info(name, connector is not None, self.min_agent_version), None
        return probe_agent(name, connector, min_version=self.min_agent_version, timeout=self.agent_timeout)

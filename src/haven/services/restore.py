"""Restore beyond restore-disks: a new VM from a point, replacing a VM's disks, file recovery over
NBD, cross-region restore for GRS vaults, and importing a vault without the old database.

Every restore that moves data runs as a job (``restore_handlers``): ``RestoreVm``, ``ReplaceDisks``,
``CrossRegionRestore`` (restore-disks from the paired region's replica) and ``FileRecovery``
(mount a recovery point as read-only NBD exports). ``import_vault`` runs inline: it reads only
manifests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from haven.agent.work import RestoreVmPlan, restore_disks_into, run_restore_vm
from haven.db.models import Host, HostShare, Job, ProtectedItem, RecoveryPoint, Subscription, Vault, VirtualMachine
from haven.db.types import new_id
from haven.domain.enums import JobStatus, JobType, ProtectionState, Role
from haven.errors import Conflict, HavenError, NotFound, PreconditionFailed, UserError
from haven.jobs.runner import JobContext
from haven.services.auth import Caller
from haven.services.execution import lock_item_for_point, withdraw_point
from haven.services.points import check_target, refuse_corrupt

__all__ = [
    "RestoreService",
    "restore_handlers",
    "domain_xml_for_point",
    "write_vm_definition",
    "RESTORE_VM",
    "REPLACE_DISKS",
    "CROSS_REGION_RESTORE",
    "FILE_RECOVERY",
]

log = logging.getLogger(__name__)

RESTORE_VM = "RestoreVm"
REPLACE_DISKS = "ReplaceDisks"
CROSS_REGION_RESTORE = "CrossRegionRestore"
FILE_RECOVERY = "FileRecovery"
DOMAIN_XML = "vm-definition.xml"
TEMPLATE_JSON = "vm-template.json"
DEFAULT_MOUNT_HOURS = 12.0
MAX_MOUNT_HOURS = 7 * 24.0
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DEV = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")
_ACTIVE = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value)


# ---------------------------------------------------------------------------------------------- errors


class RestoreVmNameInUse(Conflict):
    code = "UserErrorRestoreVmNameInUse"
    message = ("A VM named {name!r} already exists on host {host!r}. Replacing an existing VM is not supported "
               "during restore: a restore never silently replaces a VM.")
    recommendation = ("Delete the existing VM first, or restore under a new name (--target-vm-name). To put the "
                      "recovery point's disks back into the existing VM, use 'haven restore replace-disks'.")


class RestoreVmNameInvalid(UserError):
    code = "UserErrorRestoreVmNameInvalid"
    message = "{name!r} is not a valid name for the restored VM."
    recommendation = "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or a digit."


class RestoreHostInvalid(UserError):
    code = "UserErrorRestoreHostInvalid"
    message = "No host {host!r} to restore to in region {region!r}: {reason}"
    recommendation = "Pick a host of region {region!r} (haven host list); a VM is restored in its vault's region (or the paired region with --use-secondary-region)."


class ReplaceDisksVmRunning(Conflict):
    code = "UserErrorReplaceDisksVmNotStopped"
    message = "VM {vm!r} is {state}; its disks can be replaced only while it is stopped."
    recommendation = "Shut the VM down (from inside the guest, or 'virsh shutdown {vm}'), wait until it is stopped, then run the replace again."


class ReplaceDisksBusy(Conflict):
    code = "UserErrorReplaceDisksOperationInProgress"
    message = "Another backup or restore of {vm!r} is queued or running (job {job_id})."
    recommendation = "Wait for job {job_id} to finish (haven job wait --name {job_id}), then try again."


class ReplaceDisksMismatch(UserError):
    code = "UserErrorReplaceDisksDiskMismatch"
    message = "VM {vm!r} has no disk(s) {disks} that recovery point {point} holds; it has {have}."
    recommendation = "Replace only disks the VM still has (choose them with --disk), or restore the point as a new VM (haven restore restore-vm)."


class CrossRegionRestoreUnavailable(PreconditionFailed):
    code = "UserErrorCrossRegionRestoreNotAvailable"
    message = "Vault {vault!r} uses {redundancy} storage{reason}: it has no copy in a secondary region."
    recommendation = "Cross-region restore needs a GRS vault whose region has a paired region; restore from the primary region instead."


class PointNotReplicated(NotFound):
    code = "UserErrorRecoveryPointNotInSecondaryRegion"
    message = "Recovery point {point} of {vm!r} is not (yet) in the secondary region {region!r}."
    recommendation = "Replication runs after every backup; restore an older point that is already replicated, or from the primary region."


class MountDurationInvalid(UserError):
    code = "UserErrorFileRecoveryDurationInvalid"
    message = "A recovery point can stay mounted between a few seconds and {max} hours, not {hours} hours."
    recommendation = "Give --hours between 0.01 and {max} (the default is 12)."


class FileRecoverySessionNotFound(NotFound):
    code = "UserErrorFileRecoverySessionNotFound"
    message = "Recovery point {point} of {vm!r} is not mounted."
    recommendation = "Mount it first with 'haven restore files mount-rp'; mounts close by themselves when their time is up."


class FileRecoveryToolMissing(PreconditionFailed):
    code = "UserErrorFileRecoveryToolMissing"
    message = "File recovery needs {tool} on the host, and it is not installed."
    recommendation = "Install it (Debian/Ubuntu: apt-get install qemu-utils coreutils), then mount the recovery point again."


class VaultImportInvalid(UserError):
    code = "UserErrorVaultImportInvalid"
    message = "The storage at {location} cannot be imported: {reason}"
    recommendation = "Give the vault's storage URL (e.g. file:///srv/haven/storage/local/<vault id>) and the old server's master key file."


class VaultImportConflict(Conflict):
    code = "UserErrorVaultImportConflict"
    message = "Vault {vault!r} cannot be imported: {reason}"
    recommendation = "Import under another name (--name), or remove the conflicting vault or VM from this server first."


class MasterKeyInvalid(UserError):
    code = "UserErrorMasterKeyInvalid"
    message = "The master key given is not a valid key file ({reason})."
    recommendation = "Pass the old server's $HAVEN_HOME/master.key file as it is (32 bytes), e.g. --master-key-file /backup/master.key."


# ---------------------------------------------------------------------------------------------- VM definitions


def _formats(disk_files: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, path in disk_files.items():
        out[name] = "qcow2" if str(path).endswith(".qcow2") else "raw"
    return out


def _targets(names: list[str]) -> dict[str, str]:
    """Disk name -> libvirt target dev (vda…): names that are devices keep theirs; others get the next free vdX."""
    used = {n for n in names if _DEV.match(n)}
    out, letter = {}, 0
    for n in names:
        if _DEV.match(n):
            out[n] = n
            continue
        while f"vd{chr(ord('a') + letter)}" in used:
            letter += 1
        out[n] = f"vd{chr(ord('a') + letter)}"
        used.add(out[n])
    return out


def domain_xml_for_point(name: str, meta: dict, disk_files: dict[str, str], point_id: str | None = None) -> str:
    """A libvirt domain recreating the VM as it was backed up, with the restored disks.

    ``meta`` is the recovery point's manifest meta (definition, nics, vm, time…); ``disk_files``
    maps disk name -> restored image path. NICs keep their original networks, models and MAC
    addresses: the definition describes the VM as it was.
    """
    from haven.hypervisor.libvirt_adapter import domain_xml_from_definition

    definition = meta.get("definition")
    formats = _formats(disk_files)
    if isinstance(definition, str) and definition.strip().startswith("<"):
        xml = ET.fromstring(definition)
        el = xml.find("name")
        if el is None:
            el = ET.SubElement(xml, "name")
        el.text = name
        uuid_el = xml.find("uuid")
        if uuid_el is not None:
            xml.remove(uuid_el)
        devices = xml.find("devices")
        if devices is None:
            devices = ET.SubElement(xml, "devices")
        for disk in list(devices.findall("disk")):
            if disk.get("device", "disk") != "disk":
                continue
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            if dev not in disk_files:
                devices.remove(disk)
                continue
            disk.set("type", "file")
            for tag in ("source", "backingStore"):
                old = disk.find(tag)
                if old is not None:
                    disk.remove(old)
            disk.insert(1, ET.Element("source", file=os.path.abspath(disk_files[dev])))
            drv = disk.find("driver")
            if drv is None:
                drv = ET.SubElement(disk, "driver", name="qemu")
            drv.set("type", formats[dev])
        text = ET.tostring(xml, encoding="unicode")
    else:
        definition = dict(definition) if isinstance(definition, dict) else {}
        definition.setdefault("nics", meta.get("nics") or [])
        targets = _targets(list(disk_files))
        text = domain_xml_from_definition(name, {targets[n]: (os.path.abspath(p), formats[n]) for n, p in disk_files.items()},
                                          definition)
        xml = ET.fromstring(text)
        ifaces = xml.find("devices").findall("interface")  # type: ignore[union-attr]
        for iface, nic in zip(ifaces, definition.get("nics") or []):
            if isinstance(nic, dict) and nic.get("mac"):
                iface.insert(0, ET.Element("mac", address=str(nic["mac"])))
        text = ET.tostring(xml, encoding="unicode")
    xml = ET.fromstring(text)
    desc = xml.find("description")
    if desc is None:
        desc = ET.Element("description")
        xml.insert(1, desc)
    desc.text = (f"Restored by Haven from recovery point {point_id or '?'} of VM {meta.get('vm')!r} "
                 f"taken {meta.get('time')} ({meta.get('consistency')}).")
    return ET.tostring(xml, encoding="unicode")


def write_vm_definition(target: Path | str, meta: dict, disk_files: dict[str, str], point_id: str,
                        name: str | None = None) -> list[str]:
    """Write the libvirt domain XML (``vm-definition.xml``) and the JSON template (``vm-template.json``)
    recreating the VM of ``meta`` with ``disk_files`` next to the restored disks. Returns the paths."""
    target = Path(target)
    vm_name = name or meta.get("vm") or "restored-vm"
    xml_path = target / DOMAIN_XML
    xml_path.write_text(domain_xml_for_point(vm_name, meta, disk_files, point_id) + "\n")
    template = target / TEMPLATE_JSON
    nics = meta.get("nics") or []
    template.write_text(json.dumps({
        "vm": meta.get("vm"), "name": vm_name, "definition": meta.get("definition"), "nics": nics,
        "disks": {k: os.path.abspath(v) for k, v in disk_files.items()},
        "recovery_point": point_id, "time": meta.get("time"), "consistency": meta.get("consistency"),
        "domain_xml": DOMAIN_XML, "notes": nic_notes(meta.get("vm"), nics),
    }, indent=2, default=str))
    return [str(xml_path), str(template)]


def nic_notes(vm: str | None, nics: list) -> list[str]:
    """The seeds' rule: special network configurations are restored as they were, through the CLI/API."""
    if not nics or len(nics) < 2:
        return []
    desc = ", ".join(f"{n.get('network') or n.get('type') or '?'}/{n.get('mac') or 'auto'}" for n in nics if isinstance(n, dict))
    return [f"VM {vm!r} has a special network configuration ({len(nics)} NICs: {desc}). The dashboard cannot recreate it, "
            "so this restore is offered through the CLI/API and keeps the original NIC configuration (networks, models, "
            "MAC addresses). If the original VM still runs on the same networks, change the MAC addresses before starting both."]


# ---------------------------------------------------------------------------------------------- the service


class RestoreService:
    def __init__(self, core):
        self.core = core

    # ---- storage ----
    def secondary_url(self, vault: Vault) -> str | None:
        region = self.core.settings.region(vault.region)
        paired = self.core.settings.region(region.paired_region) if region and region.paired_region else None
        if paired is None:
            return None
        return f"{paired.storage_url.rstrip('/')}/{vault.id}"

    def open_repo(self, vault: Vault, secondary: bool = False):
        if not secondary:
            return self.core.storage.open(vault)
        from haven.engine import Repository

        url = self.secondary_url(vault)
        if url is None:
            raise CrossRegionRestoreUnavailable(vault=vault.name, redundancy=vault.redundancy, reason="")
        return Repository.open(self.core.storage.backend(url), self.core.storage.kek())

    def _require_secondary(self, vault: Vault, item: ProtectedItem, point: RecoveryPoint, vm: str) -> str:
        region = self.core.settings.region(vault.region)
        if vault.redundancy != "GRS" or region is None or not region.paired_region:
            reason = "" if vault.redundancy != "GRS" else f" but region {vault.region!r} has no paired region"
            raise CrossRegionRestoreUnavailable(vault=vault.name, redundancy=vault.redundancy, reason=reason)
        from haven.engine.format import point_name

        backend = self.core.storage.backend(self.secondary_url(vault))
        if not backend.exists(point_name(item.id, point.id)):
            raise PointNotReplicated(point=point.id, vm=vm, region=region.paired_region)
        return region.paired_region

    def _find(self, s, caller, subscription, vault_name, vm, point_id, role, secondary: bool = False):
        """The point to restore; ``secondary``: read from the paired region's copy, which the primary's damage does not touch."""
        vault, item, point = self.core.points.find(s, caller, subscription, vault_name, vm, point_id, role)
        if item.state == ProtectionState.SOFT_DELETED.value:
            from haven.services.points import PointSoftDeleted

            raise PointSoftDeleted(vm=vm)
        if not secondary:
            refuse_corrupt(vault, point, vm)
        return vault, item, point

    # ---- restore-vm ----
    def restore_vm(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str, target_vm_name: str,
                   host: str | None = None, target: str | None = None, fmt: str = "raw",
                   use_secondary_region: bool = False) -> dict:
        with self.core.db.session() as s:
            vault, item, point = self._find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR, use_secondary_region)
            if not isinstance(target_vm_name, str) or not _VM_NAME.match(target_vm_name):
                raise RestoreVmNameInvalid(name=target_vm_name)
            if fmt not in ("raw", "qcow2"):
                from haven.services.points import RestoreFormatInvalid

                raise RestoreFormatInvalid(fmt=fmt)
            region = self._require_secondary(vault, item, point, vm) if use_secondary_region else vault.region
            target_path = check_target(target, self.core.settings.restore_roots) if target is not None else None
            host_row = self.pick_host(s, region, host, s.get(VirtualMachine, item.vm_id), vault.subscription_id)
            taken = s.scalar(select(VirtualMachine).where(VirtualMachine.host_id == host_row.id, VirtualMachine.name == target_vm_name,
                                                          VirtualMachine.power_state != "missing"))
            if taken is not None:
                raise RestoreVmNameInUse(name=target_vm_name, host=host_row.name)
            params = {"point_id": point.id, "item_id": item.id, "name": target_vm_name, "format": fmt,
                      "target": str(target_path) if target_path else None, "secondary": bool(use_secondary_region)}
            self.core.agents.require_runs(host_row, RESTORE_VM, "RestoreVM", secondary=bool(use_secondary_region))
            job = self.core.queue.enqueue(s, type=RESTORE_VM, operation="RestoreVM", params=params,
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id,
                                          host_id=host_row.id)
            return self.core.jobs.view(job, s)

    def pick_host(self, s, region: str, host: str | None, original: VirtualMachine | None, subscription_id: str) -> Host:
        """The host to restore to, among those shared with the subscription (another host answers as if it did not exist)."""
        shared = self.core.inventory.is_shared
        if host:
            row = s.scalar(select(Host).where(Host.name == host))
            if row is None or not shared(s, row.id, subscription_id):
                raise RestoreHostInvalid(host=host, region=region, reason="no such host is registered.")
            if row.region != region:
                raise RestoreHostInvalid(host=host, region=region, reason=f"it is in region {row.region!r}.")
            return row
        if original is not None:
            row = s.get(Host, original.host_id)
            if row is not None and row.region == region and not row.adapter_url.startswith("imported:") and shared(s, row.id, subscription_id):
                return row
        rows = [h for h in s.scalars(select(Host).where(Host.region == region).order_by(Host.name))
                if not h.adapter_url.startswith("imported:") and shared(s, h.id, subscription_id)]
        if not rows:
            raise RestoreHostInvalid(host="(any)", region=region, reason="no host has registered there.")
        return rows[0]

    # ---- replace disks ----
    def replace_disks(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str,
                      disks: list[str] | None = None) -> dict:
        with self.core.db.session() as s:
            vault, item, point = self._find(s, caller, subscription, vault_name, vm, point_id, Role.CONTRIBUTOR)
            machine = s.get(VirtualMachine, item.vm_id)
            self.core.inventory.require_vm_shared(s, machine, vault.subscription_id)
            if machine.power_state not in ("stopped", "shutoff", "unknown"):
                raise ReplaceDisksVmRunning(vm=vm, state=machine.power_state)
            names = [d["name"] for d in point.disks]
            chosen = list(disks) if disks else names
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise ReplaceDisksMismatch(vm=vm, disks=", ".join(unknown), point=point.id, have=", ".join(names))
            have = {d.get("name") for d in (machine.info or {}).get("disks", [])}
            missing = sorted(set(chosen) - have) if have else []
            if missing:
                raise ReplaceDisksMismatch(vm=vm, disks=", ".join(missing), point=point.id, have=", ".join(sorted(n for n in have if n)))
            busy = s.scalar(select(Job.id).where(Job.item_id == item.id, Job.status.in_(_ACTIVE),
                                                 Job.type.in_((JobType.BACKUP.value, REPLACE_DISKS, RESTORE_VM))))
            if busy:
                raise ReplaceDisksBusy(vm=vm, job_id=busy)
            self.core.agents.require_runs(s.get(Host, machine.host_id), REPLACE_DISKS, "ReplaceDisks")
            job = self.core.queue.enqueue(s, type=REPLACE_DISKS, operation="ReplaceDisks",
                                          params={"point_id": point.id, "item_id": item.id, "disks": chosen},
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id,
                                          host_id=machine.host_id)
            return self.core.jobs.view(job, s)

    # ---- cross-region restore of disks ----
    def restore_disks_secondary(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str,
                                target: str, disks: list[str] | None = None, fmt: str = "raw") -> dict:
        with self.core.db.session() as s:
            vault, item, point = self._find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR, secondary=True)
            from haven.services.points import RestoreFormatInvalid, refuse_existing

            if fmt not in ("raw", "qcow2"):
                raise RestoreFormatInvalid(fmt=fmt)
            target_path = check_target(target, self.core.settings.restore_roots)
            names = [d["name"] for d in point.disks]
            chosen = list(disks) if disks else names
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise UserError(f"Recovery point {point_id} has no disk(s) {', '.join(unknown)}; it has {', '.join(names)}.",
                                "Pick disks from the recovery point's disk list (haven recoverypoint show).")
            refuse_existing(target_path, chosen, fmt, target)
            region = self._require_secondary(vault, item, point, vm)
            job = self.core.queue.enqueue(s, type=CROSS_REGION_RESTORE, operation="CrossRegionRestoreDisks",
                                          params={"point_id": point.id, "item_id": item.id, "target": str(target_path),
                                                  "disks": chosen, "format": fmt, "secondary": True, "region": region},
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id)
            return self.core.jobs.view(job, s)

    def list_secondary_points(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> list[dict]:
        """The item's recovery points as the secondary region holds them (read from its storage)."""
        with self.core.db.session() as s:
            vault, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm)
            region = self.core.settings.region(vault.region)
            if vault.redundancy != "GRS" or region is None or not region.paired_region:
                raise CrossRegionRestoreUnavailable(vault=vault.name, redundancy=vault.redundancy, reason="")
        repo = self.open_repo(vault, secondary=True)
        out = []
        for info in repo.list_points(item.id):
            out.append({"id": info.point_id, "vm": vm, "time": info.created, "region": region.paired_region,
                        "disks": [{"name": k, "size": v} for k, v in info.disks.items()]})
        return sorted(out, key=lambda p: p["time"], reverse=True)

    # ---- file recovery ----
    def _sessions_dir(self) -> Path:
        return self.core.settings.home / "file-recovery"

    def mount(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str,
              disks: list[str] | None = None, hours: float = DEFAULT_MOUNT_HOURS, use_secondary_region: bool = False) -> dict:
        if not isinstance(hours, (int, float)) or not (0.0001 <= hours <= MAX_MOUNT_HOURS):
            raise MountDurationInvalid(hours=hours, max=int(MAX_MOUNT_HOURS))
        with self.core.db.session() as s:
            vault, item, point = self._find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR, use_secondary_region)
            names = [d["name"] for d in point.disks]
            chosen = list(disks) if disks else names
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise UserError(f"Recovery point {point_id} has no disk(s) {', '.join(unknown)}; it has {', '.join(names)}.",
                                "Pick disks from the recovery point's disk list (haven recoverypoint show).")
            if use_secondary_region:
                self._require_secondary(vault, item, point, vm)
            job = self.core.queue.enqueue(s, type=FILE_RECOVERY, operation="MountRecoveryPoint",
                                          params={"point_id": point.id, "item_id": item.id, "disks": chosen, "hours": float(hours),
                                                  "secondary": bool(use_secondary_region), "vm": vm},
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id)
            return self.core.jobs.view(job, s)

    def _sessions(self) -> list[dict]:
        out = []
        folder = self._sessions_dir()
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")):
                try:
                    out.append(json.loads(f.read_text()))
                except (OSError, ValueError):
                    continue
        return out

    def list_mounts(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> list[dict]:
        with self.core.db.session() as s:
            _, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm)
        return [m for m in self._sessions() if m.get("item_id") == item.id and _alive(m)]

    def unmount(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str) -> dict:
        with self.core.db.session() as s:
            _, item, point = self.core.points.find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)
        closed = []
        for m in self._sessions():
            if m.get("item_id") == item.id and m.get("point_id") == point.id:
                was_open = _alive(m)
                close_session(m)
                if was_open:
                    closed.append(m["session_id"])
        if not closed:
            raise FileRecoverySessionNotFound(point=point_id, vm=vm)
        return {"vm": vm, "recovery_point": point_id, "closed": closed}

    # ---- vault import ----
    def import_vault(self, caller: Caller, subscription: str, storage_url: str, master_key: str | bytes | None = None,
                     name: str | None = None, region: str | None = None) -> dict:
        from haven.domain.vault import validate_vault_name, vault_name_key
        from haven.engine import LocalKeyWrapper, Repository
        from haven.errors import HavenError

        now = self.core.clock.now()
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.CONTRIBUTOR)
            if not isinstance(storage_url, str) or "://" not in storage_url:
                raise VaultImportInvalid(location=str(storage_url)[:200], reason="it is not a storage URL.")
            new_kek = self.core.storage.kek()
            old_kek = new_kek
            if master_key:
                raw = master_key
                if isinstance(raw, str):
                    try:
                        raw = base64.b64decode(raw, validate=True)
                    except (binascii.Error, ValueError):
                        raise MasterKeyInvalid(reason="not base64") from None
                if len(raw) != 32:
                    raise MasterKeyInvalid(reason=f"{len(raw)} bytes instead of 32")
                old_kek = LocalKeyWrapper(raw)
            backend = self.core.storage.backend(storage_url)
            repo = Repository.open(backend, old_kek)
            try:
                info = repo.vault_info
            except HavenError:
                raise
            except Exception as exc:  # noqa: BLE001 - a vault without a readable description
                raise VaultImportInvalid(location=backend.location, reason=f"its description does not open ({exc}).") from None
            vault_id = str(info.get("vault_id") or "")
            if not vault_id or len(vault_id) > 32:
                raise VaultImportInvalid(location=backend.location, reason="its description names no vault id.")
            if s.get(Vault, vault_id) is not None:
                raise VaultImportConflict(vault=info.get("vault_name"), reason=f"a vault with id {vault_id} already exists on this server.")
            vname = name or info.get("vault_name") or f"imported-{vault_id[:8]}"
            validate_vault_name(vname)
            if s.scalar(select(Vault.id).where(Vault.subscription_id == sub.id, Vault.name_key == vault_name_key(vname))):
                raise VaultImportConflict(vault=vname, reason=f"subscription {subscription!r} already has a vault of that name.")
            vregion = region or info.get("region") or self.core.settings.local_region
            self.core.regions.require(vregion)
            vault = Vault(id=vault_id, subscription_id=sub.id, name=vname, name_key=vault_name_key(vname), region=vregion,
                          redundancy="LRS", storage_url=storage_url, created_at=now)
            secondary = self._secondary_copy(vault)
            if secondary is not None:
                vault.redundancy = "GRS"  # its copy in the paired region is there: keep replicating
            s.add(vault)
            s.flush()
            self.core.policies.add_default(s, vault)
            items = points = 0
            for item_id in repo.list_items():
                if s.get(ProtectedItem, item_id) is not None:
                    raise VaultImportConflict(vault=vname, reason=f"protected item {item_id} already exists on this server.")
                manifests = [repo.load_point(item_id, p.point_id) for p in repo.list_points(item_id)]
                if not manifests:
                    continue
                latest = manifests[-1].meta or {}
                machine = self._import_vm(s, vregion, latest, now, sub.id, vname)
                if s.scalar(select(ProtectedItem.id).where(ProtectedItem.vm_id == machine.id)):
                    raise VaultImportConflict(vault=vname, reason=f"VM {machine.name!r} is already protected on this server.")
                times = [_when(m.meta or {}, m.created) for m in manifests]
                s.add(ProtectedItem(id=item_id, vault_id=vault.id, vm_id=machine.id, policy_id=None,
                                    state=ProtectionState.PROTECTION_STOPPED.value, last_backup_status="Completed",
                                    last_backup_time=max(times), last_success_time=max(times), created_at=min(times)))
                s.flush()
                for m, when in zip(manifests, times):
                    meta = m.meta or {}
                    s.add(RecoveryPoint(id=m.point_id, item_id=item_id, vault_id=vault.id, job_id=None, time=when,
                                        consistency=meta.get("consistency") or "CrashConsistent",
                                        size_bytes=sum(d.size for d in m.disks), stored_bytes=int((m.stats or {}).get("bytes_new", 0)),
                                        disks=[{"name": d.name, "size": d.size, "format": d.format} for d in m.disks],
                                        expires_at=None, retain_until=None))
                    points += 1
                items += 1
            s.flush()
            if old_kek.key_id != new_kek.key_id:
                repo.rewrap(new_kek, old_kek)  # last: any error above leaves storage as it was
                if secondary is not None:  # the secondary copy's data key must open with this server's key too
                    secondary.store("config", backend.load("config"))
            view = self.core.vaults.view(s, vault)
            view.update({"imported_items": items, "imported_recovery_points": points, "storage_url": storage_url,
                         "key_rewrapped": old_kek.key_id != new_kek.key_id})
            return view

    def _secondary_copy(self, vault: Vault):
        """The backend of the vault's copy in the paired region, if one exists there (and is not the storage itself)."""
        url = self.secondary_url(vault)
        if url is None or url.rstrip("/") == vault.storage_url.rstrip("/"):
            return None
        try:
            backend = self.core.storage.backend(url)
            return backend if backend.exists("config") else None
        except Exception:  # noqa: BLE001 - no readable copy: the vault is imported as LRS
            return None

    def _import_vm(self, s, region: str, meta: dict, now: datetime, subscription_id: str, vault_name: str) -> VirtualMachine:
        """The VM an imported item belongs to, among the hosts shared with the importing subscription.

        When none matches, the VM is recorded (missing) on its old host if that host is shared with the
        subscription, else on a host of imported VMs of the subscription's own: never on another tenant's host.
        """
        name = meta.get("vm") or "unknown-vm"
        found = s.scalars(select(VirtualMachine).join(Host).where(
            VirtualMachine.name == name, Host.region == region,
            Host.id.in_(select(HostShare.host_id).where(HostShare.subscription_id == subscription_id)))).all()
        if len(found) == 1:
            return found[0]
        host = None
        for host_name in (meta.get("host") or "imported", f"imported-{subscription_id}"):
            host = s.scalar(select(Host).where(Host.name == host_name))
            if host is None:
                host = Host(name=host_name, region=region, adapter_url=f"imported://{host_name}", created_at=now, last_seen=None)
                s.add(host)
                s.flush()
                s.add(HostShare(host_id=host.id, subscription_id=subscription_id, created_at=now))
                break
            if self.core.inventory.is_shared(s, host.id, subscription_id):
                break
        else:
            raise VaultImportConflict(vault=vault_name, reason=f"no host of the subscription can hold VM {name!r}.")
        machine = s.scalar(select(VirtualMachine).where(VirtualMachine.host_id == host.id, VirtualMachine.name == name))
        if machine is None:
            info = {"name": name, "uuid": meta.get("vm_uuid"), "power_state": "missing", "disks": meta.get("disks") or [],
                    "nics": meta.get("nics") or [], "definition": meta.get("definition"), "encryption": meta.get("encryption"),
                    "imported": True}
            machine = VirtualMachine(host_id=host.id, name=name, uuid=meta.get("vm_uuid"), power_state="missing", info=info, last_seen=now)
            s.add(machine)
            s.flush()
        return machine


def _when(meta: dict, created: datetime) -> datetime:
    try:
        return datetime.fromisoformat(meta["time"]) if meta.get("time") else created
    except (TypeError, ValueError):
        return created


# ---------------------------------------------------------------------------------------------- file-recovery sessions


def _alive(session: dict) -> bool:
    pid = session.get("pid")
    if not pid:
        return False
    try:
        os.killpg(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def close_session(session: dict) -> None:
    """Stop a file-recovery session's NBD servers and remove its scratch files."""
    pid = session.get("pid")
    if pid:
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        end = time.monotonic() + 5
        while time.monotonic() < end and _alive(session):
            time.sleep(0.05)
        if _alive(session):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except OSError:
                pass
    for key in ("scratch", "sockets"):
        if session.get(key):
            shutil.rmtree(session[key], ignore_errors=True)
    for key in ("record", "log"):
        if session.get(key):
            Path(session[key]).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- job handlers


class _Base:
    def __init__(self, core):
        self.core = core

    def _load(self, job):
        p = job.params
        with self.core.db.session() as s:
            point = s.get(RecoveryPoint, p["point_id"])
            if point is None:
                from haven.services.points import PointNotFound

                raise PointNotFound(point=p["point_id"], vm=p.get("vm", "?"))
            vault = s.get(Vault, point.vault_id)
            s.expunge(vault)
            item_id, point_id = point.item_id, point.id
        repo = self.core.restore.open_repo(vault, bool(p.get("secondary")))
        return vault, item_id, point_id, repo


class RestoreVmHandler(_Base):
    """Plan on the server, restore the disks and define the VM on the host (``run_restore_vm``), record here."""

    def __call__(self, ctx: JobContext) -> None:
        plan, repo, host = self._prepare(ctx.job)
        adapter = self.core.adapters.for_host(host)
        result = run_restore_vm(plan, adapter, repo, ctx, self.core.settings.home / "restored")
        try:
            self.core.inventory.report_vms(None, host.id, [v.to_dict() for v in adapter.list_vms()])
        except Exception:  # the agent refreshes its inventory on its own too
            log.exception("inventory refresh after restore-vm failed")
        ctx.commit(lambda s: {**result, "secondary_region": bool(ctx.job.params.get("secondary"))})

    def plan(self, job):
        return self._prepare(job)[0]

    def _prepare(self, job):
        p = job.params
        vault, item_id, point_id, repo = self._load(job)
        with self.core.db.session() as s:
            host = s.get(Host, job.host_id)
            s.expunge(host)
        manifest = repo.load_point(item_id, point_id)
        meta = manifest.meta or {}
        plan = RestoreVmPlan(item_id=item_id, point_id=point_id, name=p["name"], format=p["format"], target=p.get("target"),
                             host=host.name, meta=meta, disks=[d.name for d in manifest.disks],
                             notes=nic_notes(meta.get("vm"), meta.get("nics") or []))
        return plan, repo, host


def settle_folder_vm(folder: Path, files: dict[str, str]) -> dict[str, str]:
    """Move the restored disks into the new image-folder VM's folder and make vm.json refer to them relatively."""
    moved = {}
    for name, path in files.items():
        dest = folder / Path(path).name
        os.replace(path, dest)
        moved[name] = str(dest)
    vm_json = folder / "vm.json"
    definition = json.loads(vm_json.read_text())
    for d in definition.get("disks", []):
        if d.get("name") in moved:
            d["file"] = Path(moved[d["name"]]).name
    tmp = folder / ".vm.json.tmp"
    tmp.write_text(json.dumps(definition, indent=2))
    tmp.rename(vm_json)
    return moved


class CrossRegionRestoreHandler(_Base):
    def __call__(self, ctx: JobContext) -> None:
        p = ctx.job.params
        vault, item_id, point_id, repo = self._load(ctx.job)
        manifest = repo.load_point(item_id, point_id)
        target = Path(p["target"])
        files = restore_disks_into(repo, item_id, point_id, list(p["disks"]), target, p["format"], ctx)
        extra = write_vm_definition(target, manifest.meta or {}, files, point_id)
        ctx.commit(lambda s: {"target": str(target), "files": list(files.values()) + extra, "region": p.get("region"),
                              "secondary_region": True})


class ReplaceDisksHandler(_Base):
    BACKUP_STEP = "Back up current disks"
    REPLACE_STEP = "Replace disks"

    def __call__(self, ctx: JobContext) -> None:
        p = ctx.job.params
        vault, item_id, point_id, repo = self._load(ctx.job)
        with self.core.db.session() as s:
            item = s.get(ProtectedItem, item_id)
            machine = s.get(VirtualMachine, item.vm_id)
            host = s.get(Host, machine.host_id)
            vm_name, vm_uuid, vm_info = machine.name, machine.uuid, dict(machine.info or {})
            policy = item.policy
            retention_days = (policy.retention or {}).get("daily_days") if policy is not None else None
            s.expunge(host)
            latest = s.scalar(select(RecoveryPoint.id).where(RecoveryPoint.item_id == item_id).order_by(RecoveryPoint.time.desc()).limit(1))
        adapter = self.core.adapters.for_host(host)
        info = adapter.describe(vm_name, probe_guest=False)
        if info.power_state != "stopped":
            raise ReplaceDisksVmRunning(vm=vm_name, state=info.power_state)
        current = {d.name: d for d in info.disks}
        missing = [n for n in p["disks"] if n not in current]
        if missing:
            raise ReplaceDisksMismatch(vm=vm_name, disks=", ".join(missing), point=point_id, have=", ".join(current))
        # 1. keep what the VM has now as a recovery point: the replace can be undone
        ctx.subtask(self.BACKUP_STEP, percent=0)
        undo_id = new_id()
        started = self.core.clock.now()
        with adapter.snapshot(vm_name) as snap:
            meta = {"vm": vm_name, "vm_uuid": vm_uuid, "host": host.name, "region": vault.region, "time": started.isoformat(),
                    "consistency": "CrashConsistent", "definition": vm_info.get("definition") or info.definition,
                    "disks": [{"name": d.name, "size": d.size, "format": d.format} for d in snap.disks],
                    "nics": vm_info.get("nics", info.nics), "encryption": vm_info.get("encryption"), "job_id": ctx.job.id,
                    "trigger": "before-replace-disks", "replaced_by_point": point_id}
            summary = repo.backup(item_id, undo_id, list(snap.disks), meta, parent_point_id=latest,
                                  progress=ctx.progress_for(self.BACKUP_STEP), cancel=ctx.cancel)
        try:
            with self.core.db.session() as s:  # a restore may run on stopped protection, never on deleted data
                lock_item_for_point(s, item_id, ctx.job.id, vm_name,
                                    (ProtectionState.PROTECTED.value, ProtectionState.PROTECTION_STOPPED.value))
                s.add(RecoveryPoint(id=undo_id, item_id=item_id, vault_id=vault.id, job_id=ctx.job.id, time=started,
                                    consistency="CrashConsistent", size_bytes=sum(d["size"] for d in meta["disks"]),
                                    stored_bytes=summary.bytes_new, disks=meta["disks"],
                                    expires_at=started + timedelta(days=retention_days) if retention_days else None))
        except HavenError:
            withdraw_point(repo, item_id, undo_id)  # nothing is replaced without its undo point
            raise
        ctx.subtask(self.BACKUP_STEP, "Completed", 100, recovery_point=undo_id)
        try:
            self.core.replication.after_backup(vault.id, item_id, undo_id)
        except Exception:
            log.exception("replication after the pre-replace backup failed")
        # 2. write each disk next to the original, then rename over it
        ctx.check_cancelled()
        ctx.subtask(self.REPLACE_STEP, percent=0)
        finals = {n: Path(current[n].path) for n in p["disks"]}
        groups: dict[str, list[str]] = {}
        for n in p["disks"]:
            groups.setdefault(current[n].format if current[n].format in ("raw", "qcow2") else "raw", []).append(n)
        partials: list[tuple[Path, Path]] = []
        release = adapter.acquire_vm(vm_name, "backup")  # no backup reads the disks while they are replaced
        try:
            info = adapter.describe(vm_name, probe_guest=False)
            if info.power_state != "stopped":
                raise ReplaceDisksVmRunning(vm=vm_name, state=info.power_state)
            for fmt, names in groups.items():
                for n in names:
                    final = finals[n]
                    partial = final.with_name(f".{final.name}.haven-replace")
                    repo.restore_disk(item_id, point_id, n, str(partial), fmt=fmt, progress=ctx.progress_for(f"Restore disk {n}"))
                    partials.append((partial, final))
            for partial, final in partials:
                os.replace(partial, final)
        except BaseException:
            for partial, _ in partials:
                partial.unlink(missing_ok=True)
            raise
        finally:
            release()
        ctx.subtask(self.REPLACE_STEP, "Completed", 100)
        try:
            self.core.inventory.report_vms(None, host.id, [v.to_dict() for v in adapter.list_vms()])
        except Exception:
            log.exception("inventory refresh after replace-disks failed")

        def record(s) -> dict:
            row = s.get(ProtectedItem, item_id)
            row.checkpoint = None  # the disks changed under any bitmap: the next backup compares everything
            return {"vm": vm_name, "replaced": {n: str(f) for n, f in finals.items()}, "recovery_point": point_id,
                    "undo_recovery_point": undo_id,
                    "undo": f"haven restore replace-disks --vm {vm_name} --rp-name {undo_id} (puts back the disks the VM had)"}

        ctx.commit(record)


class FileRecoveryHandler(_Base):
    def __call__(self, ctx: JobContext) -> None:
        p = ctx.job.params
        qemu_nbd, timeout_bin = shutil.which("qemu-nbd"), shutil.which("timeout")
        if qemu_nbd is None:
            raise FileRecoveryToolMissing(tool="qemu-nbd (package qemu-utils)")
        if timeout_bin is None:
            raise FileRecoveryToolMissing(tool="timeout (package coreutils)")
        vault, item_id, point_id, repo = self._load(ctx.job)
        session_id = ctx.job.id
        sessions = self.core.restore._sessions_dir()
        scratch = sessions / session_id
        scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(scratch, 0o700)
        record_path = sessions / f"{session_id}.json"
        proc: subprocess.Popen | None = None
        sockets: Path | None = None
        try:
            manifest = repo.load_point(item_id, point_id)
            sizes = {d.name: d.size for d in manifest.disks}
            serve = [n for n in p["disks"] if sizes.get(n, 0) > 0]
            for n in p["disks"]:
                if sizes.get(n, 0) == 0:
                    ctx.warn(f"Disk {n} is empty (0 bytes): there is nothing to export.")
            files = restore_disks_into(repo, item_id, point_id, serve, scratch, "raw", ctx)
            seconds = max(1, int(round(float(p["hours"]) * 3600)))
            exports, cmds = [], []
            # Unix socket paths are limited to 107 bytes: the sockets live in a short private folder
            sockets = Path(tempfile.mkdtemp(prefix="haven-fr-"))
            for n in serve:
                sock = sockets / f"{n}.sock"
                cmd = [timeout_bin, "--foreground", "-s", "TERM", str(seconds), qemu_nbd, "--read-only", "--persistent", "--shared=0",
                       "--format=raw", f"--export-name={n}", f"--socket={sock}", files[n]]
                cmds.append(" ".join(shlex.quote(c) for c in cmd) + " &")
                exports.append({"disk": n, "size": sizes[n], "socket": str(sock), "export_name": n,
                                "uri": f"nbd+unix:///{n}?socket={sock}"})
            cleanup = " ".join(shlex.quote(str(x)) for x in (scratch, sockets, record_path, sessions / f"{session_id}.log"))
            script = "\n".join(cmds + ["wait", f"rm -rf {cleanup}"])
            log_path = sessions / f"{session_id}.log"
            with open(log_path, "ab") as log_fh:
                proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=log_fh, start_new_session=True)
            end = time.monotonic() + 30
            while time.monotonic() < end and not all(Path(e["socket"]).exists() for e in exports):
                if proc.poll() is not None:
                    raise FileRecoveryToolMissing(tool="a working qemu-nbd", message=f"qemu-nbd exited: {log_path.read_text()[-500:]}")
                time.sleep(0.05)
            expires = self.core.clock.now() + timedelta(seconds=seconds)
            session = {"session_id": session_id, "pid": proc.pid, "item_id": item_id, "point_id": point_id, "vm": p.get("vm"),
                       "scratch": str(scratch), "sockets": str(sockets), "record": str(record_path), "log": str(log_path),
                       "expires_at": expires.isoformat(), "exports": exports}
            record_path.write_text(json.dumps(session, indent=2))
        except BaseException:
            close_session({"pid": proc.pid if proc is not None else None, "scratch": str(scratch),
                           "sockets": str(sockets) if sockets else None, "record": str(record_path)})
            raise
        with self.core.db.session() as s:
            subscription = s.get(Subscription, vault.subscription_id).name
        instructions = mount_instructions(exports, p.get("vm"), point_id, subscription, vault.name)
        try:
            ctx.commit(lambda s: {"session_id": session_id, "expires_at": expires.isoformat(), "exports": exports,
                                  "instructions": instructions})
        except BaseException:
            close_session(session)
            raise


def mount_instructions(exports: list[dict], vm: str | None, point_id: str, subscription: str, vault: str) -> list[str]:
    lines = ["The recovery point's disks are served read-only over NBD on this host. To recover files (as root):",
             "  modprobe nbd max_part=16"]
    for i, e in enumerate(exports):
        dev = f"/dev/nbd{i}"
        lines += [f"  nbd-client -unix {e['socket']} -N {e['export_name']} -readonly {dev}    # disk {e['disk']}"
                  f" (or: qemu-nbd --read-only --connect={dev} '{e['uri']}')",
                  f"  mkdir -p /mnt/recovery/{e['disk']} && mount -o ro,noload {dev}p1 /mnt/recovery/{e['disk']}"
                  f"    # or {dev} when the disk has no partition table; for LVM run 'vgscan' first"]
    lines += ["Copy the files you need, then: umount /mnt/recovery/* and 'nbd-client -d /dev/nbdN' for each device,",
              "and close the export: haven restore files unmount-rp -s "
              f"{shlex.quote(subscription)} -v {shlex.quote(vault)} --vm {shlex.quote(str(vm))} --rp-name {point_id}",
              "Without a mount: guestfish --ro -a 'URI' or nbdcopy 'URI' disk.raw work too."]
    return lines


def restore_handlers(core) -> dict:
    """Job handlers this module adds (job type -> handler)."""
    return {RESTORE_VM: RestoreVmHandler(core), REPLACE_DISKS: ReplaceDisksHandler(core),
            CROSS_REGION_RESTORE: CrossRegionRestoreHandler(core), FILE_RECOVERY: FileRecoveryHandler(core)}

"""Restore beyond restore-disks, the use cases: a new VM from a point, replacing a VM's disks, file
recovery over NBD, cross-region restore for GRS vaults, and importing a vault without the old database.

Every restore that moves data runs as a job (``restore_jobs``): ``RestoreVm``, ``ReplaceDisks``,
``CrossRegionRestore`` (restore-disks from the paired region's replica) and ``FileRecovery``
(mount a recovery point as read-only NBD exports, ``work.sessions``). ``import_vault`` runs inline
(``vault_import``): it reads only manifests. VM definitions of restored VMs: ``hypervisor.definitions``.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from sqlalchemy import select

from haven.db.models import Host, Job, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.domain.enums import JobStatus, JobType, ProtectionState, Role
from haven.errors import UserError
from haven.hypervisor.definitions import domain_xml_for_point, nic_notes, write_vm_definition
from haven.services.auth import Caller
from haven.services.points import check_target, refuse_corrupt
from haven.services.restore_errors import (
    CrossRegionRestoreUnavailable,
    FileRecoverySessionNotFound,
    FileRecoveryToolMissing,
    MasterKeyInvalid,
    MountDurationInvalid,
    PointNotReplicated,
    ReplaceDisksBusy,
    ReplaceDisksMismatch,
    ReplaceDisksVmRunning,
    RestoreHostInvalid,
    RestoreVmNameInUse,
    RestoreVmNameInvalid,
    VaultImportConflict,
    VaultImportInvalid,
)
from haven.services.vault_import import VaultImport
from haven.work.sessions import close_session, list_sessions, session_alive

__all__ = [
    "RestoreService",
    "mount_instructions",
    "domain_xml_for_point",
    "write_vm_definition",
    "nic_notes",
    "close_session",
    # the errors, from restore_errors
    "RestoreVmNameInUse", "RestoreVmNameInvalid", "RestoreHostInvalid", "ReplaceDisksVmRunning", "ReplaceDisksBusy",
    "ReplaceDisksMismatch", "CrossRegionRestoreUnavailable", "PointNotReplicated", "MountDurationInvalid",
    "FileRecoverySessionNotFound", "FileRecoveryToolMissing", "VaultImportInvalid", "VaultImportConflict", "MasterKeyInvalid",
]

log = logging.getLogger(__name__)

DEFAULT_MOUNT_HOURS = 12.0
MAX_MOUNT_HOURS = 7 * 24.0
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ACTIVE = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value)


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
            self.core.agents.require_runs(host_row, JobType.RESTORE_VM.value, "RestoreVM", secondary=bool(use_secondary_region))
            job = self.core.queue.enqueue(s, type=JobType.RESTORE_VM.value, operation="RestoreVM", params=params,
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
                                                 Job.type.in_((JobType.BACKUP.value, JobType.REPLACE_DISKS.value, JobType.RESTORE_VM.value))))
            if busy:
                raise ReplaceDisksBusy(vm=vm, job_id=busy)
            self.core.agents.require_runs(s.get(Host, machine.host_id), JobType.REPLACE_DISKS.value, "ReplaceDisks")
            job = self.core.queue.enqueue(s, type=JobType.REPLACE_DISKS.value, operation="ReplaceDisks",
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
            job = self.core.queue.enqueue(s, type=JobType.CROSS_REGION_RESTORE.value, operation="CrossRegionRestoreDisks",
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
    def sessions_dir(self) -> Path:
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
            job = self.core.queue.enqueue(s, type=JobType.FILE_RECOVERY.value, operation="MountRecoveryPoint",
                                          params={"point_id": point.id, "item_id": item.id, "disks": chosen, "hours": float(hours),
                                                  "secondary": bool(use_secondary_region), "vm": vm},
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id)
            return self.core.jobs.view(job, s)

    def _sessions(self) -> list[dict]:
        return list_sessions(self.sessions_dir())

    def list_mounts(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> list[dict]:
        with self.core.db.session() as s:
            _, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm)
        return [m for m in self._sessions() if m.get("item_id") == item.id and session_alive(m)]

    def unmount(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str) -> dict:
        with self.core.db.session() as s:
            _, item, point = self.core.points.find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)
        closed = []
        for m in self._sessions():
            if m.get("item_id") == item.id and m.get("point_id") == point.id:
                was_open = session_alive(m)
                close_session(m)
                if was_open:
                    closed.append(m["session_id"])
        if not closed:
            raise FileRecoverySessionNotFound(point=point_id, vm=vm)
        return {"vm": vm, "recovery_point": point_id, "closed": closed}

    # ---- vault import ----
    def import_vault(self, caller: Caller, subscription: str, storage_url: str, master_key: str | bytes | None = None,
                     name: str | None = None, region: str | None = None) -> dict:
        return VaultImport(self.core).import_vault(caller, subscription, storage_url, master_key, name, region)


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

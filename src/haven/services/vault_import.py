"""Importing a vault into this server from its storage alone (``haven vault import``): the old
server's database is not needed, only the vault's storage and, if it differs, the old master key.

Every item becomes a protected item with stopped protection, every manifest a recovery point
(``recording.record_point``), every VM one of the importing subscription's hosts (never another
tenant's); the data key is rewrapped under this server's key last, so any error leaves storage as it was.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from sqlalchemy import select

from haven.db.models import Host, HostShare, ProtectedItem, Vault, VirtualMachine
from haven.domain.enums import ProtectionState, Role
from haven.services.auth import Caller
from haven.services.recording import PointRecord, record_point
from haven.services.restore_errors import MasterKeyInvalid, VaultImportConflict, VaultImportInvalid

__all__ = ["VaultImport"]


class VaultImport:
    def __init__(self, core):
        self.core = core

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
                    record_point(s, PointRecord(
                        point_id=m.point_id, item_id=item_id, vault_id=vault.id, job_id=None, time=when,
                        consistency=meta.get("consistency") or "CrashConsistent",
                        disks=[{"name": d.name, "size": d.size, "format": d.format} for d in m.disks],
                        stored_bytes=int((m.stats or {}).get("bytes_new", 0)), expires_at=None,
                    ), machine.name, allowed=None)  # the item was made in this transaction
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
        url = self.core.restore.secondary_url(vault)
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

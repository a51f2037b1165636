"""Protected items: enable protection for a VM, change its policy, back up now, stop protection."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from haven.db.models import Host, Job, Policy, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.domain.enums import JobStatus, JobType, ProtectionState, Role
from haven.domain.retention import ON_DEMAND_RETENTION_DAYS
from haven.errors import Conflict, HavenError, NotFound, UserError
from haven.services.auth import Caller
from haven.services.paging import Keyset

__all__ = ["ProtectionService", "ItemNotFound"]

#: Attempts a scheduled backup gets (retries wait 1 and then 4 minutes: ``jobs.queue.retry_delay``).
SCHEDULED_BACKUP_ATTEMPTS = 3


#: by VM name; the item id breaks ties (one name on two hosts)
ITEMS = Keyset("items", ((VirtualMachine.name, False), (ProtectedItem.id, False)))

class ItemNotFound(NotFound):
    code = "UserErrorProtectedItemNotFound"
    message = "VM {name!r} is not a protected item of vault {vault!r}."
    recommendation = "List the vault's items with 'haven item list --vault {vault}', or enable protection first."


class VmRegionMismatch(UserError):
    code = "UserErrorVmNotInVaultRegion"
    message = "VM {vm!r} runs in region {vm_region!r} but vault {vault!r} is in region {vault_region!r}. The vault must be in the same region as the VMs it protects."
    recommendation = "Use a vault in region {vm_region!r} (create one with 'haven vault create --region {vm_region}' if there is none)."


class VmAlreadyProtected(Conflict):
    code = "UserErrorVmAlreadyProtected"
    message = "VM {vm!r} is already protected by vault {vault!r}."
    recommendation = "Change its policy with 'haven item set-policy', or stop its protection in vault {vault!r} first."


class VmProtectedElsewhere(Conflict):
    """What a caller without a role on the protecting vault's subscription learns: no vault, no subscription."""

    code = "UserErrorVmProtectedByAnotherSubscription"
    message = "VM {vm!r} is already protected by another subscription's vault."
    recommendation = "A VM is protected by one vault only: ask the administrator of the server which subscription protects it."


class ItemSoftDeleted(Conflict):
    code = "UserErrorItemSoftDeleted"
    message = "The backup data of VM {vm!r} in vault {vault!r} is soft-deleted; protection cannot be enabled again until it is undeleted or purged."
    recommendation = "Undelete it with 'haven protection undelete --vault {vault} --vm {vm}', then resume protection."
    recommendation_ui = "Undelete it (the Undelete button on the vault's page), then resume protection with Configure backup."


class ItemNotSoftDeleted(Conflict):
    code = "UserErrorItemNotSoftDeleted"
    message = "Item {vm!r} is in state {state}, not soft-deleted: there is nothing to undelete."
    recommendation = "Undelete applies to items whose protection was stopped with 'delete backup data' in the last soft-delete period."


class ItemNotProtected(Conflict):
    code = "UserErrorItemNotProtected"
    message = "Item {vm!r} is in state {state}; backups run only for protected items."
    recommendation = "Resume protection with 'haven protection enable-for-vm' (or undelete a soft-deleted item first)."


class BackupAlreadyRunning(Conflict):
    code = "UserErrorBackupOperationInProgress"
    message = "Another backup of {vm!r} is already queued or running (job {job_id})."
    recommendation = "Wait for job {job_id} to finish (haven job wait --name {job_id}), then try again."


class StopProtectionBusy(Conflict):
    code = "UserErrorStopProtectionJobInProgress"
    message = "Protection of {vm!r} cannot be stopped{how} while its {operation} job {job_id} is {status}."
    recommendation = "Wait for job {job_id} to finish (haven job wait --name {job_id}) or stop it (haven job stop --name {job_id}), then stop protection again."


class DiskSelectionInvalid(UserError):
    code = "UserErrorDiskSelectionInvalid"
    message = "The disk selection is invalid: {reason}"
    recommendation = ("Name disks as 'haven -o json vm list' lists them under \"disks\" (e.g. vda, vdb); "
                      "give either --include-disks or --exclude-disks, not both.")


class RetainUntilInvalid(UserError):
    code = "UserErrorRetainUntilInvalid"
    message = "The expiry {value} of an on-demand backup must lie in the future (and at most 99 years ahead)."
    recommendation = "Give a later date with --retain-until (e.g. 2027-01-31)."
    recommendation_ui = "Pick a later day in 'Retain backup till'."


_ACTIVE_JOB = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value)


class ProtectionService:
    def __init__(self, core):
        self.core = core

    # ---- lookups ----
    def find_item(self, s, caller: Caller, subscription: str, vault_name: str, vm: str, needed: Role = Role.READER) -> tuple[Vault, ProtectedItem]:
        vault = self.core.vaults.find(s, caller, subscription, vault_name, needed)
        item = s.scalar(
            select(ProtectedItem).join(VirtualMachine).where(ProtectedItem.vault_id == vault.id, VirtualMachine.name == vm)
        )
        if item is None:
            raise ItemNotFound(name=vm, vault=vault.name)
        return vault, item

    def _probe_guest(self, caller: Caller, subscription: str, vault_name: str, vm: str, host: str | None) -> None:
        """Ask the VM's guest agent afresh (the server's own hosts) so that the rules judge what the guest runs now."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.OPERATOR)
            machine = self.core.inventory.find_vm(s, vm, host, shared_with=vault.subscription_id)
            where = (machine.host.id, machine.host.adapter_url, bool(machine.host.remote), machine.name)
        try:
            self.core.inventory.refresh_guest(*where)
        except HavenError:  # the hypervisor does not answer now: the facts last reported judge
            pass

    def _check_agent_version(self, machine: VirtualMachine) -> None:
        """Seed 001's minimum-version rule: a guest agent that answers with an older version is refused, with the fix."""
        from haven.domain.guest import agent_version_ok
        from haven.hypervisor.errors import GuestAgentVersionUnsupported

        ga = (machine.info or {}).get("guest_agent") or {}
        minimum = self.core.settings.min_guest_agent_version
        if ga.get("answering") and agent_version_ok(ga.get("version"), minimum) is False:
            raise GuestAgentVersionUnsupported(name=machine.name, version=ga.get("version"), minimum=minimum)

    # ---- use cases ----
    def enable(self, caller: Caller, subscription: str, vault_name: str, vm: str, policy: str | None = None,
               host: str | None = None, include_disks: list[str] | None = None, exclude_disks: list[str] | None = None,
               approval_id: str | None = None) -> dict:
        now = self.core.clock.now()
        self._probe_guest(caller, subscription, vault_name, vm, host)
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.OPERATOR)
            pol = self.core.policies.find(s, vault, policy or "DefaultPolicy")
            machine = self.core.inventory.find_vm(s, vm, host, shared_with=vault.subscription_id)
            if machine.host.region != vault.region:
                raise VmRegionMismatch(vm=vm, vm_region=machine.host.region, vault=vault.name, vault_region=vault.region)
            self._check_disks(machine, include_disks, exclude_disks)
            self._check_agent_version(machine)
            self.core.support.check_protectable(machine.info or {}, include_disks, exclude_disks)
            self.core.keyvault.check_backup_access((machine.info or {}).get("encryption"), vault.subscription_id)
            existing = s.scalar(select(ProtectedItem).where(ProtectedItem.vm_id == machine.id))
            if existing is not None:
                protecting = s.get(Vault, existing.vault_id)
                if not caller.can(protecting.subscription_id, Role.READER):
                    raise VmProtectedElsewhere(vm=vm)
                owner = protecting.name
                if existing.state == ProtectionState.SOFT_DELETED.value:
                    raise ItemSoftDeleted(vm=vm, vault=owner)
                if existing.vault_id != vault.id or existing.state == ProtectionState.PROTECTED.value:
                    raise VmAlreadyProtected(vm=vm, vault=owner)
            self.core.guard.check_resume(s, caller, vault, existing, pol, approval_id)
            item = existing or ProtectedItem(vault_id=vault.id, vm_id=machine.id, created_at=now)
            item.policy_id, item.state = pol.id, ProtectionState.PROTECTED.value
            item.include_disks, item.exclude_disks = include_disks or None, exclude_disks or None
            s.add(item)
            s.flush()
            job = self.core.queue.enqueue(s, type=JobType.CONFIGURE_BACKUP.value, operation="ConfigureBackup",
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id)
            job.status, job.started_at, job.ended_at = JobStatus.COMPLETED.value, now, now
            return self.view(s, item)

    def enable_many(self, caller: Caller, subscription: str, vault_name: str, vms: list[str], policy: str | None = None,
                    host: str | None = None, include_disks: list[str] | None = None, exclude_disks: list[str] | None = None,
                    approval_id: str | None = None) -> dict:
        """Protect several VMs with one call. The vault and the policy are checked first (an error there
        changes nothing); then each VM on its own, in its own transaction: protected, or its typed error."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.OPERATOR)
            self.core.policies.find(s, vault, policy or "DefaultPolicy")
        results: list[dict] = []
        for vm in vms:
            try:
                item = self.enable(caller, subscription, vault_name, vm, policy, host, include_disks, exclude_disks, approval_id)
                results.append({"vm": vm, "status": "Protected", "item": item, "error": None})
            except HavenError as e:
                results.append({"vm": vm, "status": "Failed", "item": None, "error": e.to_payload()["error"]})
        protected = sum(r["status"] == "Protected" for r in results)
        return {"protected": protected, "failed": len(results) - protected, "results": results}

    def set_policy(self, caller: Caller, subscription: str, vault_name: str, vm: str, policy: str, approval_id: str | None = None) -> dict:
        with self.core.db.session() as s:
            vault, item = self.find_item(s, caller, subscription, vault_name, vm, Role.CONTRIBUTOR)
            new_policy = self.core.policies.find(s, vault, policy)
            self.core.guard.check_item_policy(s, caller, vault, item, new_policy, approval_id)
            item.policy_id = new_policy.id
            return self.view(s, item)

    def disable(self, caller: Caller, subscription: str, vault_name: str, vm: str, delete_backup_data: bool,
                approval_id: str | None = None) -> dict:
        now = self.core.clock.now()
        with self.core.db.session() as s:
            vault, item = self.find_item(s, caller, subscription, vault_name, vm, Role.CONTRIBUTOR)
            self._refuse_while_busy(s, item, vm, delete_backup_data)
            if delete_backup_data:
                self.core.support.check_deletion_allowed(vault)
                self.core.guard.check_stop_protection(s, caller, vault, item, delete_backup_data, approval_id)
                item.state, item.deleted_at = ProtectionState.SOFT_DELETED.value, now
            else:
                item.state = ProtectionState.PROTECTION_STOPPED.value
            item.policy_id = None
            jtype = JobType.DELETE_BACKUP_DATA if delete_backup_data else JobType.DISABLE_BACKUP
            job = self.core.queue.enqueue(s, type=jtype.value, operation=jtype.value, subscription_id=vault.subscription_id,
                                          vault_id=vault.id, item_id=item.id)
            job.status, job.started_at, job.ended_at = JobStatus.COMPLETED.value, now, now
            return self.view(s, item)

    def undelete(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> dict:
        """Bring back soft-deleted backup data; the item returns as "protection stopped, data kept"."""
        with self.core.db.session() as s:
            vault, item = self.find_item(s, caller, subscription, vault_name, vm, Role.CONTRIBUTOR)
            if item.state != ProtectionState.SOFT_DELETED.value:
                raise ItemNotSoftDeleted(vm=vm, state=item.state)
            item.state, item.deleted_at = ProtectionState.PROTECTION_STOPPED.value, None
            return self.view(s, item)

    def backup_now(self, caller: Caller, subscription: str, vault_name: str, vm: str, retain_until: datetime | None = None) -> dict:
        now = self.core.clock.now()
        with self.core.db.session() as s:
            vault, item = self.find_item(s, caller, subscription, vault_name, vm, Role.OPERATOR)
            if retain_until is not None:
                if retain_until.tzinfo is None or retain_until <= now or (retain_until - now).days > 99 * 366:
                    raise RetainUntilInvalid(value=retain_until.isoformat())
            else:
                retain_until = now + timedelta(days=ON_DEMAND_RETENTION_DAYS)
            return self._enqueue_backup(s, vault, item, retain_until, trigger="on-demand")

    def enqueue_scheduled_backup(self, s, vault: Vault, item: ProtectedItem, slot: datetime) -> dict:
        """The scheduler's use case: the backup of a policy's ``slot``, in the caller's transaction."""
        return self._enqueue_backup(s, vault, item, None, trigger="scheduled", slot=slot)

    def _enqueue_backup(self, s, vault: Vault, item: ProtectedItem, retain_until: datetime | None, trigger: str,
                        slot: datetime | None = None) -> dict:
        if item.state != ProtectionState.PROTECTED.value:
            raise ItemNotProtected(vm=item.vm.name, state=item.state)
        running = s.scalar(select(Job.id).where(Job.item_id == item.id, Job.type == JobType.BACKUP.value, Job.status.in_(_ACTIVE_JOB)))
        if running:
            raise BackupAlreadyRunning(vm=item.vm.name, job_id=running)
        params = {"retain_until": retain_until.isoformat() if retain_until else None, "trigger": trigger,
                  "slot": slot.isoformat() if slot else None}
        # a scheduled backup that meets a transient failure is tried again within its window
        attempts = SCHEDULED_BACKUP_ATTEMPTS if trigger == "scheduled" else 1
        job = self.core.queue.enqueue(s, type=JobType.BACKUP.value, operation="Backup", params=params,
                                      subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id,
                                      host_id=item.vm.host_id, max_attempts=attempts)
        return self.core.jobs.view(job)

    def check_vm(self, caller: Caller, subscription: str, vm: str, host: str | None = None) -> dict:
        """Which vault protects this VM, if any (``az backup protection check-vm``), among the subscription's hosts.

        A vault of a subscription the caller has no role on is not named.
        """
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.READER)
            machine = self.core.inventory.find_vm(s, vm, host, shared_with=sub.id)
            item = s.scalar(select(ProtectedItem).where(ProtectedItem.vm_id == machine.id))
            if item is None:
                return {"vm": vm, "protected": False, "vault": None}
            vault = s.get(Vault, item.vault_id)
            if not caller.can(vault.subscription_id, Role.READER):
                return {"vm": vm, "protected": item.state == ProtectionState.PROTECTED.value, "state": item.state,
                        "vault": None, "other_subscription": True}
            return {"vm": vm, "protected": item.state == ProtectionState.PROTECTED.value, "state": item.state,
                    "vault": vault.name, "vault_id": vault.id}

    def list_items(self, caller: Caller, subscription: str, vault_name: str) -> list[dict]:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            items = s.scalars(select(ProtectedItem).where(ProtectedItem.vault_id == vault.id)).all()
            return sorted(self.views(s, items), key=lambda v: v["vm"])

    def page_items(self, caller: Caller, subscription: str, vault_name: str, limit: int = 100,
                   cursor: str | None = None) -> tuple[list[dict], str | None]:
        """By VM name, ``limit`` at a time (``services/paging.py``)."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            q = (select(ProtectedItem, VirtualMachine.name).join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)
                 .where(ProtectedItem.vault_id == vault.id))
            rows, following = ITEMS.page(s, q, limit, cursor, lambda r: (r[1], r[0].id))
            return self.views(s, [item for item, _ in rows]), following

    def show_item(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> dict:
        with self.core.db.session() as s:
            _, item = self.find_item(s, caller, subscription, vault_name, vm)
            return self.view(s, item)

    def check_retention_change(self, s, vault: Vault, policy: Policy, retention) -> None:
        self.core.support.check_retention_change(vault, policy, retention)

    # ---- helpers ----
    @staticmethod
    def _refuse_while_busy(s, item: ProtectedItem, vm: str, delete_backup_data: bool) -> None:
        """A job of the item in flight would record a point on stopped protection (a backup) or read
        data being deleted (any job): stop protection only once none is queued or running."""
        busy = select(Job).where(Job.item_id == item.id, Job.status.in_(_ACTIVE_JOB)).order_by(Job.created_at).limit(1)
        if not delete_backup_data:
            busy = busy.where(Job.type == JobType.BACKUP.value)
        job = s.scalar(busy)
        if job is not None:
            raise StopProtectionBusy(vm=vm, how=" with its backup data deleted" if delete_backup_data else "",
                                     operation=job.operation, job_id=job.id, status=job.status)

    @staticmethod
    def _check_disks(machine: VirtualMachine, include: list[str] | None, exclude: list[str] | None) -> None:
        names = {d.get("name") for d in (machine.info or {}).get("disks", [])}
        if include and exclude:
            raise DiskSelectionInvalid(reason="give either the disks to include or the disks to exclude, not both.")
        chosen = include or exclude or []
        unknown = sorted(set(chosen) - names)
        if unknown:
            raise DiskSelectionInvalid(reason=f"VM {machine.name!r} has no disk(s) {', '.join(unknown)}; it has {', '.join(sorted(n for n in names if n)) or 'none'}.")
        if include is not None and include == []:
            raise DiskSelectionInvalid(reason="at least one disk must be included.")
        if exclude and set(exclude) >= names:
            raise DiskSelectionInvalid(reason="every disk would be excluded.")

    def view(self, s, item: ProtectedItem) -> dict:
        return self.views(s, [item])[0]

    def views(self, s, items: list[ProtectedItem]) -> list[dict]:
        """The views of many items in a fixed number of queries, however many items there are (a list
        endpoint must not cost one query per item)."""
        if not items:
            return []
        ids = [i.id for i in items]
        vms = {vm.id: vm for vm in s.scalars(select(VirtualMachine).where(VirtualMachine.id.in_({i.vm_id for i in items})))}
        hosts = {h.id: h for h in s.scalars(select(Host).where(Host.id.in_({vm.host_id for vm in vms.values()})))}
        policy_ids = {i.policy_id for i in items if i.policy_id}
        policies = {p.id: p for p in s.scalars(select(Policy).where(Policy.id.in_(policy_ids)))} if policy_ids else {}
        vaults = {v.id: v for v in s.scalars(select(Vault).where(Vault.id.in_({i.vault_id for i in items})))}
        newest = (select(RecoveryPoint.item_id, func.max(RecoveryPoint.time).label("time"))
                  .where(RecoveryPoint.item_id.in_(ids)).group_by(RecoveryPoint.item_id).subquery())
        latest = {p.item_id: p for p in s.scalars(select(RecoveryPoint).join(
            newest, (RecoveryPoint.item_id == newest.c.item_id) & (RecoveryPoint.time == newest.c.time)))}
        return [self._view(item, vms[item.vm_id], hosts[vms[item.vm_id].host_id], policies.get(item.policy_id),
                           latest.get(item.id), vaults[item.vault_id]) for item in items]

    def _view(self, item: ProtectedItem, vm: VirtualMachine, host: Host, policy: Policy | None, latest: RecoveryPoint | None,
              vault: Vault) -> dict:
        next_run = None
        if policy is not None and item.state == ProtectionState.PROTECTED.value:
            from haven.domain.schedule import Schedule

            next_run = Schedule.from_dict(policy.schedule).next_slot(self.core.clock.now())
        return {
            "id": item.id,
            "vm": vm.name,
            "host": host.name,
            "vault_id": item.vault_id,
            "policy": policy.name if policy else None,
            "protection_state": item.state,
            "last_backup_status": item.last_backup_status,
            "last_backup_time": item.last_backup_time,
            "latest_recovery_point": latest.time if latest else None,
            "latest_consistency": latest.consistency if latest else None,
            "next_scheduled_backup": next_run,
            "include_disks": item.include_disks,
            "exclude_disks": item.exclude_disks,
            "deleted_at": item.deleted_at,
            "purge_at": item.deleted_at + timedelta(days=vault.soft_delete_days) if item.deleted_at else None,
            "created_at": item.created_at,
        }

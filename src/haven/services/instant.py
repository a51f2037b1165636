"""Instant restore, the use cases and their jobs: a new VM running in seconds from a recovery point
(``InstantRestore``), moved to local disks while it runs (``InstantCommit``), or thrown away
(``InstantDiscard``). The host's part is ``work.instant``; it runs on the server's own libvirt host
(nbdkit reads the vault with keys the server holds).

Sessions are files in ``HOME/instant`` (one per VM name: the subscription, vault and point it came
from, nbdkit's pid, the overlays). A VM's overlays and console files are in a folder of its own,
``TARGET/NAME`` (``TARGET``: the folder given, or ``DEFAULT_ROOT``, which QEMU's user can reach,
unlike Haven's private home); discard removes that folder.
Every request needs Operator on the vault's subscription (as restore-vm); a session of another
subscription answers as if it did not exist.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from haven.db.models import Host, Subscription, VirtualMachine
from haven.domain.enums import JobType, Role
from haven.jobs.queue import Claimed
from haven.jobs.runner import Commit, JobContext
from haven.services.execution import restore_where
from haven.services.points import check_target
from haven.services.restore_errors import RestoreVmNameInvalid
from haven.services.restore_jobs import _Base
from haven.work.instant import commit_instant, discard_instant, load_session, nbdkit_problem, server_alive, start_instant
from haven.work.instant_errors import InstantHostUnsupported, InstantSessionNotFound, InstantToolMissing, InstantVmNameInUse
from haven.work.instant_repo import key_document
from haven.work.plans import Wire

__all__ = ["InstantRestoreService", "instant_service", "instant_handlers", "InstantPlan"]

log = logging.getLogger(__name__)


@dataclass
class InstantPlan(Wire):
    item_id: str
    point_id: str
    name: str
    vm: str
    host: str
    subscription: str
    vault: str
    meta: dict[str, Any] = field(default_factory=dict)
    disks: dict[str, int] = field(default_factory=dict)


DEFAULT_ROOT = Path("/var/lib/libvirt/images/haven-instant")


def _sessions(core) -> Path:
    return core.settings.home / "instant"


def _local_libvirt(host: Host) -> bool:
    return not host.remote and host.adapter_url.startswith("qemu")


class InstantRestoreService:
    def __init__(self, core):
        self.core = core

    def start(self, caller, subscription: str, vault_name: str, vm: str, point_id: str, name: str, host: str | None = None,
              target: str | None = None) -> dict:
        from haven.services.restore import _VM_NAME

        with self.core.db.session() as s:
            vault, item, point = self.core.restore._find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)
            if not isinstance(name, str) or not _VM_NAME.match(name):
                raise RestoreVmNameInvalid(name=name)
            host_row = self.core.restore.pick_host(s, vault.region, host, s.get(VirtualMachine, item.vm_id), vault.subscription_id)
            where = {"subscription": subscription, "vault": vault_name, "vm": vm, "point": point.id, "name": name}
            if not _local_libvirt(host_row):
                raise InstantHostUnsupported(host=host_row.name, kind=host_row.adapter_url.split(":", 1)[0], **where)
            taken = s.scalar(select(VirtualMachine).where(VirtualMachine.host_id == host_row.id, VirtualMachine.name == name,
                                                          VirtualMachine.power_state != "missing"))
            if taken is not None or load_session(_sessions(self.core), name) is not None:
                raise InstantVmNameInUse(host=host_row.name, **where)
            root = check_target(target, self.core.settings.restore_roots) if target is not None else DEFAULT_ROOT
            if os.path.lexists(root / name):
                raise InstantVmNameInUse(host=host_row.name, **where)
            problem = nbdkit_problem()
            if problem:
                raise InstantToolMissing(what=problem)
            job = self.core.queue.enqueue(s, type=JobType.INSTANT_RESTORE.value, operation="InstantRestore",
                                          params={"point_id": point.id, "item_id": item.id, "name": name, "vm": vm,
                                                  "subscription": subscription, "vault": vault_name, "root": str(root),
                                                  "default_root": target is None},
                                          subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id,
                                          host_id=host_row.id)
            return self.core.jobs.view(job, s)

    def session(self, caller, subscription: str, name: str) -> tuple[Subscription, dict[str, Any]]:
        """The session of VM ``name`` in ``subscription`` (Operator), or ``InstantSessionNotFound``."""
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.OPERATOR)
            s.expunge(sub)
        found = load_session(_sessions(self.core), name) if isinstance(name, str) and "/" not in name else None
        if found is None or found.get("subscription_id") != sub.id:
            raise InstantSessionNotFound(name=name, subscription=subscription)
        return sub, found

    def _enqueue(self, caller, subscription: str, name: str, job_type: JobType, operation: str) -> dict:
        sub, found = self.session(caller, subscription, name)
        with self.core.db.session() as s:
            job = self.core.queue.enqueue(s, type=job_type.value, operation=operation, params={"name": name, "subscription": subscription},
                                          subscription_id=sub.id, vault_id=found["vault_id"], item_id=found["item_id"],
                                          host_id=found["host_id"])
            return self.core.jobs.view(job, s)

    def commit(self, caller, subscription: str, name: str) -> dict:
        return self._enqueue(caller, subscription, name, JobType.INSTANT_COMMIT, "InstantRestoreCommit")

    def discard(self, caller, subscription: str, name: str) -> dict:
        return self._enqueue(caller, subscription, name, JobType.INSTANT_DISCARD, "InstantRestoreDiscard")


class InstantRestoreHandler(_Base):
    """Serve the point over NBD, start the VM on overlays (``work.instant.start_instant``), record the session."""

    job_type = JobType.INSTANT_RESTORE

    def plan(self, job: Claimed) -> InstantPlan:
        p = job.params
        vault, item_id, point_id, repo = self._load(job)
        manifest = repo.load_point(item_id, point_id)
        meta = manifest.meta or {}
        self.core.keyvault.check_restore_vm(meta.get("encryption"), vault.subscription_id,
                                            restore_where(self.core, vault, item_id, point_id))
        return InstantPlan(item_id=item_id, point_id=point_id, name=p["name"], vm=p["vm"], host=self._job_host(job).name,
                           subscription=p["subscription"], vault=p["vault"], meta=meta,
                           disks={d.name: d.size for d in manifest.disks})

    def run(self, plan: InstantPlan, ctx: JobContext) -> dict:
        vault, _, _, repo = self._load(ctx.job)
        host = self._job_host(ctx.job)
        where = {"subscription": plan.subscription, "vault": plan.vault, "vm": plan.vm, "point": plan.point_id, "name": plan.name}
        adapter = self.core.adapters.for_host(host)
        if getattr(adapter, "kind", None) != "libvirt" or host.remote:
            raise InstantHostUnsupported(host=host.name, kind=getattr(adapter, "kind", "?"), **where)
        from haven.hypervisor.errors import VmNotFound

        try:
            adapter.describe(plan.name, probe_guest=False)
            raise InstantVmNameInUse(host=host.name, **where)
        except VmNotFound:
            pass
        root = Path(ctx.job.params["root"])
        folder = root / plan.name
        if os.path.lexists(folder) or load_session(_sessions(self.core), plan.name) is not None:
            raise InstantVmNameInUse(host=host.name, **where)
        problem = nbdkit_problem()
        if problem:
            raise InstantToolMissing(what=problem)
        if ctx.job.params.get("default_root"):
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o711)
        doc = key_document(repo, vault.storage_url, self.core.storage.options_for(vault.storage_url), self.core.settings.home,
                           plan.item_id, plan.point_id, list(plan.disks))
        record = {"subscription_id": vault.subscription_id, "subscription": plan.subscription, "vault_id": vault.id,
                  "vault": plan.vault, "item_id": plan.item_id, "point_id": plan.point_id, "vm": plan.vm, "host_id": host.id,
                  "job_id": ctx.job.id}
        session = start_instant(adapter, plan.name, plan.meta, plan.point_id, plan.disks, folder, _sessions(self.core), doc,
                                record, ctx)
        self._refresh_inventory(host, adapter, "instant restore")
        return session

    def record(self, commit: Commit, job: Claimed, plan: InstantPlan, session: dict, remote: bool = False) -> None:
        sub = plan.subscription
        try:
            commit(lambda s: {"vm": plan.name, "host": plan.host, "recovery_point": plan.point_id, "source_vm": plan.vm,
                              "disks": session["disks"], "nbd_server_pid": session["pid"], "state": session["state"],
                              "commit": f"haven restore instant commit -s {sub} --target-vm-name {plan.name}",
                              "discard": f"haven restore instant discard -s {sub} --target-vm-name {plan.name}"})
        except BaseException:
            discard_instant(self.core.adapters.for_host(self._job_host(job)), session)
            raise


class _SessionJob(_Base):
    def _session(self, job: Claimed) -> dict:
        found = load_session(_sessions(self.core), job.params["name"])
        if found is None or found.get("vault_id") != job.vault_id:
            raise InstantSessionNotFound(name=job.params["name"], subscription=job.params.get("subscription", "?"))
        return found

    def plan(self, job: Claimed) -> dict:
        return self._session(job)


class InstantCommitHandler(_SessionJob):
    """Move the running VM to its overlays alone (``commit_instant``); nbdkit stops after."""

    job_type = JobType.INSTANT_COMMIT

    def run(self, session: dict, ctx: JobContext) -> dict:
        return commit_instant(self.core.adapters.for_host(self._job_host(ctx.job)), session, ctx)

    def record(self, commit: Commit, job: Claimed, plan: dict, session: dict, remote: bool = False) -> None:
        commit(lambda s: {"vm": session["name"], "disks": session["disks"], "state": session["state"],
                          "nbd_server_running": server_alive(plan.get("pid"))})


class InstantDiscardHandler(_SessionJob):
    """Stop and undefine the VM, stop nbdkit, remove every file (``discard_instant``)."""

    job_type = JobType.INSTANT_DISCARD

    def run(self, session: dict, ctx: JobContext) -> dict:
        host = self._job_host(ctx.job)
        adapter = self.core.adapters.for_host(host)
        removed = discard_instant(adapter, session)
        self._refresh_inventory(host, adapter, "instant discard")
        return {"vm": session["name"], "removed": removed}

    def record(self, commit: Commit, job: Claimed, plan: dict, outcome: dict, remote: bool = False) -> None:
        commit(lambda s: outcome)


def instant_handlers(core) -> dict[JobType, _Base]:
    return {JobType.INSTANT_RESTORE: InstantRestoreHandler(core), JobType.INSTANT_COMMIT: InstantCommitHandler(core),
            JobType.INSTANT_DISCARD: InstantDiscardHandler(core)}


_services: "weakref.WeakKeyDictionary[Any, InstantRestoreService]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def instant_service(core) -> InstantRestoreService:
    with _lock:
        service = _services.get(core)
        if service is None:
            service = _services[core] = InstantRestoreService(core)
        return service

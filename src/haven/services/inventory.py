"""Hosts (hypervisors whose agent registered in a region), the VMs they report, and who sees them.

Tenancy: a subscription sees and acts only on the VMs of hosts shared with it (``HostShare``).
A global Owner shares and unshares hosts. The server's own host (run by the in-process agent) is
shared with every subscription, when the host registers and when a subscription is created, unless
``[server] share_own_host = "none"``; a remote host is shared only by 'haven host share'. A VM of a
host not shared with the subscription answers exactly like a VM that does not exist.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

from sqlalchemy import select

from haven.db.models import Host, HostShare, Job, ProtectedItem, Subscription, Vault, VirtualMachine
from haven.domain.enums import JobStatus, ProtectionState, Role
from haven.errors import Conflict, HavenError, NotFound, UserError
from haven.services.auth import Caller
from haven.services.paging import Keyset

__all__ = ["InventoryService", "VmNotFound", "HostNotFound", "HostNotShared", "HostShareInUse", "HostShareBusy",
           "Tenancy", "host_view", "vm_view"]

log = logging.getLogger(__name__)

#: whose hosts a lookup may reach: one subscription id, several, or None (every host: global callers only)
Tenancy = str | Collection[str] | None

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


#: by name; the id breaks ties (one name on two hosts)
VMS = Keyset("vms", ((VirtualMachine.name, False), (VirtualMachine.id, False)))

class VmNotFound(NotFound):
    code = "UserErrorVmNotInInventory"
    message = "No host agent reports a VM named {name!r}{where}."
    recommendation = "Check the VM's name with 'haven vm list'; make sure the host agent of the VM's host runs and is registered."


class VmNameAmbiguous(UserError):
    code = "UserErrorVmNameAmbiguous"
    message = "Several hosts report a VM named {name!r}: {hosts}."
    recommendation = "Name the host too (--host)."


class HostNotFound(NotFound):
    code = "UserErrorHostNotFound"
    message = "Host {name!r} is not registered."
    recommendation = "Start 'haven agent' on the host so that it registers."


class HostNotShared(NotFound):
    code = "UserErrorHostNotShared"
    message = "Host {host!r} is not shared with subscription {subscription!r}."
    recommendation = "See each host's shares with 'haven host list'."


class HostShareInUse(Conflict):
    code = "UserErrorHostShareInUse"
    message = "Subscription {subscription!r} protects VMs of host {host!r} ({vms}); unsharing the host would stop their backups."
    recommendation = ("Stop their protection first (haven protection disable -s {subscription} --vault <vault> --vm <vm>; "
                      "the backup data is kept), then run 'haven host unshare --name {host} --subscription {subscription}' again.")


class HostShareBusy(Conflict):
    code = "UserErrorHostShareBusy"
    message = "Job {job_id} of subscription {subscription!r} is queued or running on host {host!r}."
    recommendation = ("Wait for it to finish (haven job wait -s {subscription} --name {job_id}), "
                      "then run 'haven host unshare --name {host} --subscription {subscription}' again.")


class HostNameInvalid(UserError):
    code = "UserErrorHostNameInvalid"
    message = "The host name {name!r} is invalid: 1 to 128 letters, digits, dots, underscores or hyphens."
    recommendation = "Register the host with a plain DNS-style name."


class InventoryService:
    def __init__(self, core):
        self.core = core

    def register_host(self, caller: Caller | None, name: str, region: str, adapter_url: str) -> tuple[dict, str | None]:
        """Register (or re-register) a host. Returns its view and, the first time, the agent's credential."""
        if caller is not None:
            caller.require_global(Role.OWNER)
        if not _HOST_NAME.fullmatch(name or ""):
            raise HostNameInvalid(name=name)
        self.core.regions.require(region)
        now = self.core.clock.now()
        with self.core.db.session() as s:
            host = s.scalar(select(Host).where(Host.name == name))
            fresh = host is None
            if fresh:
                host = Host(name=name, region=region, adapter_url=adapter_url, created_at=now, last_seen=now)
                s.add(host)
                s.flush()
                if caller is None and self.core.settings.share_own_host == "all":  # the server's own host
                    for sub_id in s.scalars(select(Subscription.id)).all():
                        s.add(HostShare(host_id=host.id, subscription_id=sub_id, created_at=now))
            else:
                host.region, host.adapter_url, host.last_seen = region, adapter_url, now
            view = host_view(host)
        return view, (self.core.auth.agent_token(view["id"], name) if fresh else None)

    def report_vms(self, caller: Caller | None, host_id: str, vms: list[dict], partial: bool = False) -> int:
        """Replace the host's VM list with what its agent sees now (VMs that vanished are kept, marked);
        ``partial``: update these VMs only, the others keep what was last seen."""
        if caller is not None:
            caller.require_host(host_id)
        now = self.core.clock.now()
        with self.core.db.session() as s:
            host = s.get(Host, host_id)
            if host is None:
                raise HostNotFound(name=host_id)
            host.last_seen = now
            known = {vm.name: vm for vm in s.scalars(select(VirtualMachine).where(VirtualMachine.host_id == host_id))}
            for info in vms:
                row = known.pop(info["name"], None)
                if row is None:
                    row = VirtualMachine(host_id=host_id, name=info["name"], last_seen=now)
                    s.add(row)
                row.uuid, row.power_state, row.info, row.last_seen = (info.get("uuid"), info.get("power_state", "unknown"),
                                                                      _merge_facts(row.info or {}, info), now)
            for gone in known.values() if not partial else ():
                gone.power_state = "missing"
            return len(vms)

    def refresh_host(self, host_id: str, adapter_url: str) -> int:
        """Ask the server's own host's adapter for its VMs (and their guests) now, and record them."""
        from haven.hypervisor.guest import probe_inventory

        adapter = self.core.adapters.for_url(adapter_url)
        return self.report_vms(None, host_id, [vm.to_dict() for vm in probe_inventory(adapter)])

    def refresh(self, caller: Caller) -> dict:
        """``haven vm refresh``: the server's own hosts report their VMs now instead of at their next round (a new
        VM shows at once); a remote host's agent reports on its own every inventory round."""
        if not caller.roles:
            caller.require_global(Role.READER)
        visible = caller.visible_subscriptions()
        with self.core.db.session() as s:
            q = select(Host).where(~Host.adapter_url.startswith("imported:"))
            if visible is not None:
                q = q.where(Host.id.in_(_shared_host_ids(visible)))
            own = [(h.id, h.name, h.adapter_url) for h in s.scalars(q.order_by(Host.name)) if not h.remote]
        refreshed = []
        for host_id, name, url in own:
            try:
                self.refresh_host(host_id, url)
                refreshed.append(name)
            except HavenError as e:
                log.warning("refresh of host %s failed: %s", name, e)
        return {"refreshed_hosts": refreshed, "remote_hosts": "report on their own every inventory round (30 s by default)"}

    def refresh_guest(self, host_id: str, adapter_url: str, remote: bool, name: str) -> bool:
        """Probe the guest agent of VM ``name`` now, when the server's own agent runs its host; False for a
        remote host (its agent probes every inventory round; the facts say when)."""
        from haven.hypervisor.guest import probe_inventory

        if remote or adapter_url.startswith("imported:"):
            return False
        adapter = self.core.adapters.for_url(adapter_url)
        self.report_vms(None, host_id, [vm.to_dict() for vm in probe_inventory(adapter, only=name)], partial=True)
        return True

    def find_vm(self, s, name: str, host: str | None = None, region: str | None = None, *, shared_with: Tenancy) -> VirtualMachine:
        """The VM ``name`` among the hosts shared with ``shared_with`` (None: every host)."""
        q = select(VirtualMachine).join(Host).where(VirtualMachine.name == name)
        if host:
            q = q.where(Host.name == host)
        if region:
            q = q.where(Host.region == region)
        if shared_with is not None:
            q = q.where(Host.id.in_(_shared_host_ids(shared_with)))
        found = s.scalars(q).all()
        if not found:
            where = f" on host {host!r}" if host else (f" in region {region!r}" if region else "")
            raise VmNotFound(name=name, where=where)
        if len(found) > 1:
            raise VmNameAmbiguous(name=name, hosts=", ".join(sorted(v.host.name for v in found)))
        return found[0]

    def is_shared(self, s, host_id: str, subscription_id: str) -> bool:
        return s.scalar(select(HostShare.id).where(HostShare.host_id == host_id, HostShare.subscription_id == subscription_id)) is not None

    def require_vm_shared(self, s, machine: VirtualMachine, subscription_id: str) -> None:
        """A VM of a host no longer shared with the subscription answers like a VM that does not exist."""
        if not self.is_shared(s, machine.host_id, subscription_id):
            raise VmNotFound(name=machine.name, where="")

    def list_vms(self, caller: Caller, region: str | None = None, subscription: str | None = None) -> list[dict]:
        """The VMs of the hosts shared with the caller's subscriptions (or with ``subscription`` only)."""
        if not caller.roles:
            caller.require_global(Role.READER)
        visible = caller.visible_subscriptions()
        with self.core.db.session() as s:
            if subscription is not None:
                visible = {self.core.subscriptions.get_visible(s, caller, subscription).id}
            q = select(VirtualMachine, Host).join(Host)
            if region:
                q = q.where(Host.region == region)
            if visible is not None:
                q = q.where(Host.id.in_(_shared_host_ids(visible)))
            minimum = self.core.settings.min_guest_agent_version
            return [vm_view(vm, host, minimum) for vm, host in s.execute(q.order_by(VirtualMachine.name))]

    def page_vms(self, caller: Caller, region: str | None = None, limit: int = 100,
                 cursor: str | None = None) -> tuple[list[dict], str | None]:
        """:meth:`list_vms` by name, ``limit`` at a time (``services/paging.py``)."""
        if not caller.roles:
            caller.require_global(Role.READER)
        visible = caller.visible_subscriptions()
        with self.core.db.session() as s:
            q = select(VirtualMachine, Host).join(Host)
            if region:
                q = q.where(Host.region == region)
            if visible is not None:
                q = q.where(Host.id.in_(_shared_host_ids(visible)))
            rows, following = VMS.page(s, q, limit, cursor, lambda r: (r[0].name, r[0].id))
            minimum = self.core.settings.min_guest_agent_version
            return [vm_view(vm, host, minimum) for vm, host in rows], following

    def list_hosts(self, caller: Caller) -> list[dict]:
        if not caller.roles:
            caller.require_global(Role.READER)
        visible = caller.visible_subscriptions()
        with self.core.db.session() as s:
            q = select(Host).order_by(Host.name)
            if visible is not None:
                q = q.where(Host.id.in_(_shared_host_ids(visible)))
            return [host_view(h, self._shares(s, h.id, visible)) for h in s.scalars(q)]

    # ---- shares (a global Owner's) ----
    def share_host(self, caller: Caller | None, host: str, subscription: str) -> dict:
        """Share ``host`` with ``subscription`` (by name or id); sharing twice changes nothing."""
        if caller is not None:
            caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            row, sub = self._host(s, host), self.core.subscriptions.find(s, subscription)
            if not self.is_shared(s, row.id, sub.id):
                s.add(HostShare(host_id=row.id, subscription_id=sub.id, created_at=self.core.clock.now()))
                s.flush()
            return host_view(row, self._shares(s, row.id, None))

    def unshare_host(self, caller: Caller, host: str, subscription: str) -> dict:
        """Stop sharing ``host`` with ``subscription``: refused while the subscription protects VMs there or runs jobs there."""
        caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            row, sub = self._host(s, host), self.core.subscriptions.find(s, subscription)
            share = s.scalar(select(HostShare).where(HostShare.host_id == row.id, HostShare.subscription_id == sub.id))
            if share is None:
                raise HostNotShared(host=row.name, subscription=sub.name)
            protected = s.scalars(
                select(VirtualMachine.name).join(ProtectedItem, ProtectedItem.vm_id == VirtualMachine.id).join(Vault, Vault.id == ProtectedItem.vault_id)
                .where(VirtualMachine.host_id == row.id, Vault.subscription_id == sub.id, ProtectedItem.state == ProtectionState.PROTECTED.value)
                .order_by(VirtualMachine.name)).all()
            if protected:
                raise HostShareInUse(subscription=sub.name, host=row.name, vms=", ".join(protected))
            busy = s.scalar(select(Job.id).where(Job.host_id == row.id, Job.subscription_id == sub.id,
                                                 Job.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value))))
            if busy:
                raise HostShareBusy(job_id=busy, subscription=sub.name, host=row.name)
            s.delete(share)
            s.flush()
            return host_view(row, self._shares(s, row.id, None))

    def share_own_hosts(self, s, subscription_id: str) -> None:
        """A new subscription gets the server's own hosts, when ``[server] share_own_host = "all"``."""
        if self.core.settings.share_own_host != "all":
            return
        now = self.core.clock.now()
        for h in s.scalars(select(Host)).all():
            if not h.remote and not h.adapter_url.startswith("imported:"):
                s.add(HostShare(host_id=h.id, subscription_id=subscription_id, created_at=now))

    def _host(self, s, name: str) -> Host:
        row = s.scalar(select(Host).where(Host.name == name))
        if row is None:
            raise HostNotFound(name=name)
        return row

    @staticmethod
    def _shares(s, host_id: str, visible: Collection[str] | None) -> list[str]:
        """The names of the subscriptions the host is shared with, as far as the caller may see them."""
        q = select(Subscription.id, Subscription.name).join(HostShare, HostShare.subscription_id == Subscription.id).where(HostShare.host_id == host_id)
        return sorted(name for sid, name in s.execute(q) if visible is None or sid in visible)


def _shared_host_ids(shared_with: str | Collection[str]):
    ids = [shared_with] if isinstance(shared_with, str) else list(shared_with)
    return select(HostShare.host_id).where(HostShare.subscription_id.in_(ids))


def _redacted_uri(uri: str) -> str:
    """The adapter URI as shown: a password in it (``qemu+tcp://user:pw@host/system``) becomes ``***``."""
    head, sep, rest = uri.partition("://")
    auth, at, tail = rest.partition("@")
    if sep and at and ":" in auth and "/" not in auth:
        return f"{head}://{auth.split(':', 1)[0]}:***@{tail}"
    return uri


def host_view(h: Host, shares: list[str] | None = None) -> dict:
    return {"id": h.id, "name": h.name, "region": h.region, "adapter": h.adapter_url.split("://", 1)[0],
            "adapter_uri": _redacted_uri(h.adapter_url), "last_seen": h.last_seen,
            "agent": "remote" if h.remote else "server", "agent_version": h.agent_version, "shares": shares or [],
            "network": h.network}  # the agent's own report: its proxy settings (no secrets) and each vault's probe


def _merge_facts(old: dict, new: dict) -> dict:
    """A host agent's new report of a VM over what the server knew: guest facts the round did not probe (the VM was
    busy, or only another VM was asked) keep their last values, and so does the extension state learnt at backup
    time unless the probe read it afresh."""
    merged = {**new}
    ga, old_ga = new.get("guest_agent") or {}, old.get("guest_agent") or {}
    if ga.get("skipped") and old_ga.get("checked_at"):
        merged["guest_agent"] = {**old_ga, "skipped": ga["skipped"]}
    fresh_ext = (merged.get("guest_agent") or {}).get("extension")
    if fresh_ext and not ga.get("skipped"):
        merged["extension"] = fresh_ext
    elif "extension" in old:
        merged["extension"] = old["extension"]
    return merged


def guest_facts(info: dict, minimum: str) -> dict | None:
    """The guest agent's facts as reported, judged by the one configured minimum version and the OS rules."""
    from haven.domain.guest import agent_version_ok, classify_guest_os

    ga = info.get("guest_agent")
    if ga is None:
        return None
    ga = dict(ga)
    ga["minimum_version"] = minimum
    ga["version_ok"] = agent_version_ok(ga.get("version"), minimum) if ga.get("answering") else None
    family, label, problem = classify_guest_os(ga.get("os") or {})
    ga["os_family"], ga["os_supported"] = family, (None if family == "unknown" else problem is None)
    ga["usable"] = bool(ga.get("present") and ga.get("answering") and ga["version_ok"] is not False)
    ga["extension"] = info.get("extension") or ga.get("extension")  # as the last probe or backup saw it
    return ga


def vm_view(vm: VirtualMachine, host: Host, minimum: str | None = None) -> dict:
    from haven.domain.guest import DEFAULT_MIN_AGENT_VERSION

    info = vm.info or {}
    return {
        "id": vm.id,
        "name": vm.name,
        "host": host.name,
        "region": host.region,
        "power_state": vm.power_state,
        "uuid": vm.uuid,
        "disks": info.get("disks", []),
        "guest_agent": guest_facts(info, minimum or DEFAULT_MIN_AGENT_VERSION),
        "encryption": info.get("encryption"),
        "last_seen": vm.last_seen,
    }

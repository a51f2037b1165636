"""Hosts (hypervisors whose agent registered in a region) and the VMs they report."""

from __future__ import annotations

import re

from sqlalchemy import select

from haven.db.models import Host, VirtualMachine
from haven.domain.enums import Role
from haven.errors import NotFound, UserError
from haven.services.auth import Caller

__all__ = ["InventoryService", "VmNotFound", "HostNotFound"]

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
            else:
                host.region, host.adapter_url, host.last_seen = region, adapter_url, now
            view = host_view(host)
        return view, (self.core.auth.agent_token(view["id"], name) if fresh else None)

    def report_vms(self, caller: Caller | None, host_id: str, vms: list[dict]) -> int:
        """Replace the host's VM list with what its agent sees now (VMs that vanished are kept, marked)."""
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
                kept = {"extension": row.info["extension"]} if row.info and "extension" in row.info else {}  # learnt at backup time
                row.uuid, row.power_state, row.info, row.last_seen = info.get("uuid"), info.get("power_state", "unknown"), {**kept, **info}, now
            for gone in known.values():
                gone.power_state = "missing"
            return len(vms)

    def find_vm(self, s, name: str, host: str | None = None, region: str | None = None) -> VirtualMachine:
        q = select(VirtualMachine).join(Host).where(VirtualMachine.name == name)
        if host:
            q = q.where(Host.name == host)
        if region:
            q = q.where(Host.region == region)
        found = s.scalars(q).all()
        if not found:
            where = f" on host {host!r}" if host else (f" in region {region!r}" if region else "")
            raise VmNotFound(name=name, where=where)
        if len(found) > 1:
            raise VmNameAmbiguous(name=name, hosts=", ".join(sorted(v.host.name for v in found)))
        return found[0]

    def list_vms(self, caller: Caller, region: str | None = None) -> list[dict]:
        if not caller.roles:
            caller.require_global(Role.READER)
        with self.core.db.session() as s:
            q = select(VirtualMachine, Host).join(Host)
            if region:
                q = q.where(Host.region == region)
            return [vm_view(vm, host) for vm, host in s.execute(q.order_by(VirtualMachine.name))]

    def list_hosts(self, caller: Caller) -> list[dict]:
        if not caller.roles:
            caller.require_global(Role.READER)
        with self.core.db.session() as s:
            return [host_view(h) for h in s.scalars(select(Host).order_by(Host.name))]


def host_view(h: Host) -> dict:
    return {"id": h.id, "name": h.name, "region": h.region, "adapter": h.adapter_url.split("://", 1)[0], "last_seen": h.last_seen,
            "agent": "remote" if h.remote else "server", "agent_version": h.agent_version}


def vm_view(vm: VirtualMachine, host: Host) -> dict:
    info = vm.info or {}
    return {
        "id": vm.id,
        "name": vm.name,
        "host": host.name,
        "region": host.region,
        "power_state": vm.power_state,
        "uuid": vm.uuid,
        "disks": info.get("disks", []),
        "guest_agent": info.get("guest_agent"),
        "last_seen": vm.last_seen,
    }

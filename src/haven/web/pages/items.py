"""A protected item: its recovery points, backup now, stop protection, and every restore option."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from haven.domain.enums import Role
from haven.errors import HavenError, UserError
from haven.services.auth import Caller
from haven.web.session import check_csrf, current_caller
from haven.web.pages.base import _dt, _flag, _go, _int_or_none, _render, router, _sub, _vault_url

@router.get("/s/{sub}/v/{vault}/items/{vm}")
def item_page(request: Request, sub: str, vault: str, vm: str):
    core = request.app.state.core
    caller = current_caller(request)
    return _item(request, core, caller, sub, vault, vm)


def _item(request: Request, core, caller: Caller, sub: str, vault: str, vm: str, status: int = 200, errors: dict | None = None,
          form: dict | None = None) -> HTMLResponse:
    """The item page; ``errors`` maps a restore option (disks, vm, replace, files) to the error it was refused with."""
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    item = core.protection.show_item(caller, sub, vault, vm)
    points = core.points.list(caller, sub, vault, vm)
    days: dict[str, list] = {}
    for p in points:
        days.setdefault(_dt(p["time"])[:10], []).append(p)
    default_point = next((p["id"] for p in points if p["state"] != "Corrupt"), None)  # never preselect a damaged point
    jobs = core.jobs.list(caller, sub, vault, vm=vm, limit=10)
    policies = core.policies.list(caller, sub, vault)
    region = next((r for r in core.regions.list() if r["name"] == v["region"]), {"paired_region": None})
    secondary = region.get("paired_region") if v.get("storage_redundancy") == "GRS" else None
    machine = next((m for m in core.inventory.list_vms(caller, v["region"]) if m["name"] == item["vm"] and m["host"] == item["host"]), None)
    hosts = [h for h in core.inventory.list_hosts(caller) if h.get("region") in (v["region"], secondary) and h.get("adapter") != "imported"]
    mounts = []
    if caller.can(v["subscription_id"], Role.OPERATOR):
        from haven.services.restore import mount_instructions

        for m in core.restore.list_mounts(caller, sub, vault, vm):
            mounts.append({**m, "instructions": mount_instructions(m.get("exports") or [], item["vm"], m.get("point_id"), subscription["name"], v["name"])})
    chosen = (form or {}).get("option") or next(iter(errors or {}), None) or "disks"
    # an error whose option's panel this caller does not see (a role too low, no point) is shown at the top
    needed = {"replace": Role.CONTRIBUTOR}
    top = [e for k, e in (errors or {}).items() if not points or not caller.can(v["subscription_id"], needed.get(k, Role.OPERATOR))]
    today = core.clock.now().date()
    return _render(request, "item.html", caller, status=status, sub=subscription, vault=v, item=item, points=points, days=days,
                   default_point=default_point, jobs=jobs, policies=policies, base=_vault_url(subscription["name"], v["name"]), secondary=secondary,
                   machine=machine, hosts=hosts, mounts=mounts, errors=errors or {}, form=form or {}, option=chosen,
                   top_errors=top, retain_default=(today + timedelta(days=30)).isoformat(),  # Azure's on-demand default
                   retain_min=(today + timedelta(days=1)).isoformat())


@router.post("/s/{sub}/v/{vault}/items/{vm}/backup")
def item_backup(request: Request, sub: str, vault: str, vm: str, retain_days: str = Form(""), retain_until: str = Form(""),
                csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    days = _int_or_none(retain_days)
    keep = core.clock.now() + timedelta(days=days) if days else None
    if retain_until.strip():
        keep = _end_of_day(retain_until.strip(), core.clock.now())
    job = core.protection.backup_now(caller, sub, vault, vm, keep)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Backup of {vm} started.")


def _end_of_day(text: str, now: datetime) -> datetime:
    """The last second (UTC) of the day picked in a "Retain backup till" field; a day in the past is refused."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{text!r} is not a date.", "Pick the day to keep the recovery point until (YYYY-MM-DD).") from None
    if day <= now.date():
        raise UserError(f"Retain till {day.isoformat()} is not after today.", "Pick a day after today, up to 99 years ahead.")
    return datetime.combine(day, dtime(23, 59, 59), tzinfo=timezone.utc)


@router.post("/s/{sub}/v/{vault}/items/{vm}/stop")
def item_stop(request: Request, sub: str, vault: str, vm: str, data: str = Form("keep"), confirm: str = Form(""),
              csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    if data not in ("keep", "delete"):
        raise UserError(f"Unknown choice {data!r} for the backup data.", "Choose 'keep' or 'delete'.")
    if data == "delete" and confirm != vm:
        # deleting backup data asks first, like the portal: the item's name typed again
        return _stop_confirm(request, core, caller, sub, vault, vm, mismatch=bool(confirm))
    item = core.protection.disable(caller, sub, vault, vm, delete_backup_data=data == "delete")
    what = "its backup data is kept" if data == "keep" else "its backup data is soft-deleted"
    return _go(request, _vault_url(sub, vault), f"Protection of {vm} stopped ({item['protection_state']}); {what}.")


def _stop_confirm(request: Request, core, caller: Caller, sub: str, vault: str, vm: str, mismatch: bool) -> HTMLResponse:
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    caller.require(v["subscription_id"], Role.CONTRIBUTOR)  # the service checks again when confirmed
    item = core.protection.show_item(caller, sub, vault, vm)
    points = core.points.list(caller, sub, vault, vm)
    return _render(request, "stop_confirm.html", caller, status=400 if mismatch else 200, sub=subscription, vault=v,
                   item=item, points=points, mismatch=mismatch, base=_vault_url(subscription["name"], v["name"]))


@router.post("/s/{sub}/v/{vault}/items/{vm}/undelete")
def item_undelete(request: Request, sub: str, vault: str, vm: str, csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    undelete = getattr(core.protection, "undelete", None)
    if undelete is None:
        raise UserError("Undelete is not available on this server.", "Use 'haven protection undelete' once the server supports it.")
    item = undelete(caller, sub, vault, vm)
    return _go(request, _vault_url(sub, vault), f"Backup data of {vm} undeleted; the item is {item['protection_state']}.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/policy")
def item_policy(request: Request, sub: str, vault: str, vm: str, policy: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    item = core.protection.set_policy(caller, sub, vault, vm, policy)
    return _go(request, f"{_vault_url(sub, vault)}/items/{quote(vm, safe='')}", f"{vm} now uses policy {item['policy']}.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/restore")
def item_restore(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), target: str = Form(""),
                 format: str = Form("raw"), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "disks", "point": point, "target": target, "format": format}
    try:
        _point_required(point)
        job = core.points.restore_disks(caller, sub, vault, vm, point, target.strip(), None, format)
    except HavenError as e:
        return _item(request, core, caller, sub, vault, vm, status=e.http_status, errors={"disks": e}, form=form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Restore of {vm}'s disks to {target.strip()} started.")


def _point_required(point: str) -> None:
    if not point:
        raise UserError("No recovery point was chosen.", "Pick a recovery point in the timeline, then choose the restore option again.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/restore-vm")
def item_restore_vm(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), name: str = Form(""),
                    host: str = Form(""), vm_target: str = Form(""), vm_format: str = Form("raw"), vm_secondary: str = Form(""),
                    csrf: str = Form("")):
    """Restore VM: ``core.restore.restore_vm`` (as ``POST …/recovery-points/{point}/restore-vm``); a refusal is shown on the page."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "vm", "point": point, "name": name, "host": host, "vm_target": vm_target, "vm_format": vm_format,
            "vm_secondary": vm_secondary}
    try:
        _point_required(point)
        job = core.restore.restore_vm(caller, sub, vault, vm, point, name.strip(), host.strip() or None, vm_target.strip() or None,
                                      vm_format, _flag(vm_secondary))
    except HavenError as e:
        return _item(request, core, caller, sub, vault, vm, status=e.http_status, errors={"vm": e}, form=form)
    where = " from the secondary region" if _flag(vm_secondary) else ""
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Restore of {vm} as new VM {name.strip()}{where} started.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/replace-disks")
def item_replace_disks(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), confirm: str = Form(""),
                       csrf: str = Form("")):
    """Replace disks: first a confirmation page (what will happen, the undo point), then ``core.restore.replace_disks``."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "replace", "point": point}
    try:
        _point_required(point)
        if not _flag(confirm):
            return _replace_confirm(request, core, caller, sub, vault, vm, point)
        job = core.restore.replace_disks(caller, sub, vault, vm, point)
    except HavenError as e:
        return _item(request, core, caller, sub, vault, vm, status=e.http_status, errors={"replace": e}, form=form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}",
               f"Replacing the disks of {vm} with recovery point {point}: its current disks are backed up first.")


def _replace_confirm(request: Request, core, caller: Caller, sub: str, vault: str, vm: str, point: str) -> HTMLResponse:
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    caller.require(v["subscription_id"], Role.CONTRIBUTOR)  # the service checks again when confirmed
    item = core.protection.show_item(caller, sub, vault, vm)
    rp = core.points.show(caller, sub, vault, vm, point)
    machine = next((m for m in core.inventory.list_vms(caller, v["region"]) if m["name"] == item["vm"] and m["host"] == item["host"]), None)
    power = (machine or {}).get("power_state") or "unknown"
    running = None
    if power not in ("stopped", "shutoff", "unknown"):
        from haven.services.restore import ReplaceDisksVmRunning

        running = ReplaceDisksVmRunning(vm=vm, state=power)
    return _render(request, "replace_confirm.html", caller, sub=subscription, vault=v, item=item, point=rp, machine=machine,
                   power=power, running=running, base=_vault_url(subscription["name"], v["name"]))


@router.post("/s/{sub}/v/{vault}/items/{vm}/mount")
def item_mount(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), hours: str = Form("12"),
               files_secondary: str = Form(""), csrf: str = Form("")):
    """File recovery: ``core.restore.mount`` (as ``POST …/recovery-points/{point}/mount``); the job shows the instructions."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "files", "point": point, "hours": hours, "files_secondary": files_secondary}
    try:
        _point_required(point)
        try:
            h = float((hours or "12").strip())
        except ValueError:
            raise UserError(f"{hours!r} is not a number of hours.", "Give the hours the point stays mounted, e.g. 12 or 0.5.") from None
        job = core.restore.mount(caller, sub, vault, vm, point, None, h, _flag(files_secondary))
    except HavenError as e:
        return _item(request, core, caller, sub, vault, vm, status=e.http_status, errors={"files": e}, form=form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}",
               f"Mounting recovery point {point} of {vm} for file recovery; the instructions appear when the job finishes.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/unmount")
def item_unmount(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), csrf: str = Form("")):
    """Close a point's file-recovery exports: ``core.restore.unmount`` (as ``POST …/recovery-points/{point}/unmount``)."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    _point_required(point)
    done = core.restore.unmount(caller, sub, vault, vm, point)
    return _go(request, f"{_vault_url(sub, vault)}/items/{quote(vm, safe='')}",
               f"Recovery point {point} of {vm} unmounted ({len(done['closed'])} export session(s) closed).")

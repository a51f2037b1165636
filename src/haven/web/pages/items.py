"""A protected item: its recovery points, backup now, stop protection, and every restore option."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from urllib.parse import quote, urlencode

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from haven.domain.enums import Role
from haven.errors import HavenError, UserError
from haven.services.auth import Caller
from haven.web.session import check_csrf, current_caller
from haven.web.pages.base import _back, _flag, _go, _int_or_none, _refusal, _refuse, _render, form_page, router, _sub, _vault_url
from haven.web.pages.present import _dt

OPTIONS = ("disks", "vm", "replace", "files", "keys")  # the restore options, each with its panel

@router.get("/s/{sub}/v/{vault}/items/{vm}")
def item_page(request: Request, sub: str, vault: str, vm: str):
    core = request.app.state.core
    caller = current_caller(request)
    refused = _refusal(request, *OPTIONS)
    if refused and refused.where in OPTIONS:
        return _item(request, core, caller, sub, vault, vm, errors={refused.where: refused.error}, form={**refused.form, "option": refused.where})
    return _item(request, core, caller, sub, vault, vm)


def _item_url(sub: str, vault: str, vm: str) -> str:
    return f"{_vault_url(sub, vault)}/items/{quote(vm, safe='')}"


def _item_page(request: Request) -> str:
    p = request.path_params
    return _item_url(p["sub"], p["vault"], p["vm"])


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
    keys = _key_restore(core, caller, subscription, v, item, machine, default_point)
    chosen = (form or {}).get("option") or next(iter(errors or {}), None) or "disks"
    chosen = "disks" if chosen == "keys" and not keys else chosen
    # an error whose option's panel this caller does not see (a role too low, no point, no keys to restore) is shown at the top
    needed = {"replace": Role.CONTRIBUTOR}
    top = [e for k, e in (errors or {}).items()
           if not points or not caller.can(v["subscription_id"], needed.get(k, Role.OPERATOR)) or (k == "keys" and not keys)]
    today = core.clock.now().date()
    return _render(request, "item.html", caller, status=status, sub=subscription, vault=v, item=item, points=points, days=days,
                   default_point=default_point, jobs=jobs, policies=policies, base=_vault_url(subscription["name"], v["name"]), secondary=secondary,
                   machine=machine, hosts=hosts, mounts=mounts, errors=errors or {}, form=form or {}, option=chosen,
                   top_errors=top, keys=keys, retain_default=(today + timedelta(days=30)).isoformat(),  # Azure's on-demand default
                   retain_min=(today + timedelta(days=1)).isoformat())


def _key_restore(core, caller: Caller, subscription: dict, vault: dict, item: dict, machine: dict | None, point: str | None) -> dict | None:
    """Seed 003's "restore keys and secrets" of an encrypted VM: what its latest good point holds (``core.points.key_backup``)
    and the key vaults of the subscription where this caller's access policy allows restoring keys or secrets."""
    if point is None or (machine is not None and not machine.get("encryption")):
        return None
    try:
        backup = core.points.key_backup(caller, subscription["name"], vault["name"], item["vm"], point)
    except HavenError:
        return None
    if not backup:
        return None
    targets = []
    try:
        for kv in core.keyvault.list(caller, subscription["name"]):
            shown = core.keyvault.show(caller, subscription["name"], kv["name"])
            mine = next((p for p in shown.get("access_policies") or [] if p["principal"] == caller.name), None)
            kinds = [k for k, perms in (("keys", "key_permissions"), ("secrets", "secret_permissions"))
                     if mine and "restore" in (mine.get(perms) or [])]
            if kinds:
                targets.append({"name": kv["name"], "kinds": kinds})
    except HavenError:
        targets = []
    return {"key_vault": backup.get("key_vault"), "kek_key": backup.get("kek_key"), "bek_secrets": backup.get("bek_secrets") or [],
            "targets": targets}


@router.post("/s/{sub}/v/{vault}/items/{vm}/backup")
@form_page(_back(_item_page))  # the item's actions are on the vault's page and the item's
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
@form_page(_back(_item_page))  # the item's actions are on the vault's page and the item's
def item_stop(request: Request, sub: str, vault: str, vm: str, data: str = Form("keep"), confirm: str = Form(""),
              csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    if data not in ("keep", "delete"):
        raise UserError(f"Unknown choice {data!r} for the backup data.", "Choose 'keep' or 'delete'.")
    if data == "delete" and confirm != vm:
        # deleting backup data asks first, like the portal: the item's name typed again (on a page of its own)
        confirm_page = f"{_item_url(sub, vault, vm)}/delete-data"
        if confirm:
            return _refuse(request, confirm_page, [ConfirmationMismatch(vm=vm)], "confirm")
        return _go(request, confirm_page)
    item = core.protection.disable(caller, sub, vault, vm, delete_backup_data=data == "delete")
    what = "its backup data is kept" if data == "keep" else "its backup data is soft-deleted"
    return _go(request, _vault_url(sub, vault), f"Protection of {vm} stopped ({item['protection_state']}); {what}.")


class ConfirmationMismatch(UserError):
    code = "UserErrorConfirmationMismatch"
    message = "The name typed is not {vm}: nothing was changed."
    recommendation = "Type the name of the backup item, {vm}, exactly, then choose Stop protection and delete backup data again."


@router.get("/s/{sub}/v/{vault}/items/{vm}/delete-data")
def stop_confirm_page(request: Request, sub: str, vault: str, vm: str):
    """Stop protection and delete backup data: the confirmation (the item's name typed again)."""
    core = request.app.state.core
    caller = current_caller(request)
    refused = _refusal(request, "confirm")
    return _stop_confirm(request, core, caller, sub, vault, vm, mismatch=refused.error if refused and refused.where == "confirm" else None)


def _stop_confirm(request: Request, core, caller: Caller, sub: str, vault: str, vm: str, mismatch=None) -> HTMLResponse:
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    caller.require(v["subscription_id"], Role.CONTRIBUTOR)  # the service checks again when confirmed
    item = core.protection.show_item(caller, sub, vault, vm)
    points = core.points.list(caller, sub, vault, vm)
    return _render(request, "stop_confirm.html", caller, sub=subscription, vault=v,
                   item=item, points=points, mismatch=mismatch, base=_vault_url(subscription["name"], v["name"]))


@router.post("/s/{sub}/v/{vault}/items/{vm}/undelete")
@form_page(_back(_item_page))  # the item's actions are on the vault's page and the item's
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
@form_page(_item_page)
def item_policy(request: Request, sub: str, vault: str, vm: str, policy: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    item = core.protection.set_policy(caller, sub, vault, vm, policy)
    return _go(request, f"{_vault_url(sub, vault)}/items/{quote(vm, safe='')}", f"{vm} now uses policy {item['policy']}.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/restore")
@form_page(_item_page)
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
        return _refuse(request, _item_url(sub, vault, vm), [e], "disks", form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Restore of {vm}'s disks to {target.strip()} started.")


#: The restore-keys form's choice -> what ``restore_from_recovery_point`` brings back (the CLI's restore-key, restore-secret, or both).
KEY_KINDS = {"both": ("keys", "secrets"), "keys": ("keys",), "secrets": ("secrets",)}


@router.post("/s/{sub}/v/{vault}/items/{vm}/restore-keys")
@form_page(_item_page)
def item_restore_keys(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), key_vault: str = Form(""),
                      what: str = Form("both"), csrf: str = Form("")):
    """Restore an encrypted VM's KEK and/or BEK secret(s) from a recovery point into a key vault:
    ``core.keyvault.restore_from_recovery_point`` (as ``POST …/keyvaults/{key_vault}/restore-from-recovery-point``)."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "keys", "point": point, "key_vault": key_vault, "what": what}
    try:
        _point_required(point)
        if what not in KEY_KINDS:
            raise UserError(f"Unknown choice {what!r} of what to restore.", "Choose the key and its secrets, the key only, or the secrets only.")
        done = core.keyvault.restore_from_recovery_point(caller, sub, vault, vm, point, KEY_KINDS[what], key_vault=key_vault.strip() or None)
    except HavenError as e:
        return _refuse(request, _item_url(sub, vault, vm), [e], "keys", form)
    names = [f"key {k['name']}" for k in done["keys"]] + [f"secret {x['name']}" for x in done["secrets"]]
    return _go(request, _item_url(sub, vault, vm),
               f"Restored {', '.join(names) or 'nothing'} of recovery point {point} into key vault {done['key_vault']}. "
               "You can now restore the disks of this point.")


def _point_required(point: str) -> None:
    if not point:
        raise UserError("No recovery point was chosen.", "Pick a recovery point in the timeline, then choose the restore option again.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/restore-vm")
@form_page(_item_page)
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
        return _refuse(request, _item_url(sub, vault, vm), [e], "vm", form)
    where = " from the secondary region" if _flag(vm_secondary) else ""
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Restore of {vm} as new VM {name.strip()}{where} started.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/replace-disks")
@form_page(_item_page)
def item_replace_disks(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), confirm: str = Form(""),
                       csrf: str = Form("")):
    """Replace disks: first a confirmation page (what will happen, the undo point), then ``core.restore.replace_disks``."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"option": "replace", "point": point}
    try:
        _point_required(point)
        if not _flag(confirm):  # the confirmation is a page of its own: who may, and the point, checked first
            caller.require(core.vaults.show(caller, sub, vault)["subscription_id"], Role.CONTRIBUTOR)
            core.points.show(caller, sub, vault, vm, point)
            return _go(request, f"{_item_url(sub, vault, vm)}/replace-confirm?" + urlencode({"point": point}))
        job = core.restore.replace_disks(caller, sub, vault, vm, point)
    except HavenError as e:
        return _refuse(request, _item_url(sub, vault, vm), [e], "replace", form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}",
               f"Replacing the disks of {vm} with recovery point {point}: its current disks are backed up first.")


@router.get("/s/{sub}/v/{vault}/items/{vm}/replace-confirm")
def replace_confirm_page(request: Request, sub: str, vault: str, vm: str, point: str = ""):
    """Replace disks: the confirmation (what is overwritten, the VM's power state, the undo point made first)."""
    core = request.app.state.core
    caller = current_caller(request)
    _point_required(point)
    return _replace_confirm(request, core, caller, sub, vault, vm, point)


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
@form_page(_item_page)
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
        return _refuse(request, _item_url(sub, vault, vm), [e], "files", form)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}",
               f"Mounting recovery point {point} of {vm} for file recovery; the instructions appear when the job finishes.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/unmount")
@form_page(_item_page)
def item_unmount(request: Request, sub: str, vault: str, vm: str, point: str = Form(""), csrf: str = Form("")):
    """Close a point's file-recovery exports: ``core.restore.unmount`` (as ``POST …/recovery-points/{point}/unmount``)."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    _point_required(point)
    done = core.restore.unmount(caller, sub, vault, vm, point)
    return _go(request, f"{_vault_url(sub, vault)}/items/{quote(vm, safe='')}",
               f"Recovery point {point} of {vm} unmounted ({len(done['closed'])} export session(s) closed).")

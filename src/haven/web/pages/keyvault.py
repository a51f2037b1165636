"""Key vaults, as the seeds' portal shows them: create one, and its access policies (Add → principal →
template → Save; remove), with a one-click grant of the "Haven Backup" template to the backup service."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Form, Request

from haven.domain.enums import Role
from haven.errors import HavenError
from haven.services.auth import Caller
from haven.services.keyvault import BACKUP_PRINCIPAL, BACKUP_TEMPLATE, TEMPLATES
from haven.web.pages.base import _go, _int_or_none, _refusal, _refuse, _render, form_page, router
from haven.web.session import check_csrf, current_caller


@router.get("/keyvault")
def keyvault_page(request: Request):
    """Key vaults and their access policies (``core.keyvault.list``/``show``), with the ``Haven Backup`` template."""
    core = request.app.state.core
    caller = current_caller(request)
    refused = _refusal(request)
    if refused and refused.where:
        return _keyvault(request, core, caller, refused.error, refused.where, refused.form)
    return _keyvault(request, core, caller)


def _kv_page(request: Request) -> str:
    return "/ui/keyvault"


def _keyvault(request: Request, core, caller: Caller, error=None, where: str = "", form: dict | None = None):
    groups, problem = [], None
    try:
        for sub in core.subscriptions.list(caller):
            vaults = [core.keyvault.show(caller, sub["id"], kv["name"]) for kv in core.keyvault.list(caller, sub["id"])]
            groups.append({"sub": sub, "vaults": vaults})
    except HavenError as e:
        problem = e
    creatable = [g["sub"] for g in groups if caller.can(g["sub"]["id"], Role.CONTRIBUTOR)]
    in_place = {"create"} if creatable else set()  # where an error can be shown beside its form
    in_place |= {f"policy:{g['sub']['name']}/{kv['name']}" for g in groups if caller.can(g["sub"]["id"], Role.CONTRIBUTOR) for kv in g["vaults"]}
    if error is not None and where in in_place:
        request.state.refusal_placed = True  # shown beside its form
    return _render(request, "keyvault.html", caller, groups=groups, problem=problem,
                   creatable=creatable, regions=core.regions.list(), templates_=list(TEMPLATES), backup_principal=BACKUP_PRINCIPAL,
                   backup_template=BACKUP_TEMPLATE, error=error, where=where, form=form or {},
                   error_at_top=None)


@router.post("/keyvault/new")
@form_page(_kv_page)
def keyvault_create(request: Request, name: str = Form(""), subscription: str = Form(""), region: str = Form(""),
                    retention_days: str = Form("90"), purge_protection: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"name": name, "subscription": subscription, "region": region, "retention_days": retention_days,
            "purge_protection": bool(purge_protection)}
    try:
        days = _int_or_none(retention_days) or 90
        kv = core.keyvault.create(caller, subscription, name.strip(), region, days, bool(purge_protection))
    except HavenError as e:
        return _refuse(request, "/ui/keyvault#create-kv", [e], "create", form)
    return _go(request, "/ui/keyvault", f"Key vault {kv['name']} created. Give the backup service access before you protect encrypted VMs.")


@router.post("/s/{sub}/kv/{key_vault}/access-policies")
@form_page(_kv_page)
def keyvault_add_policy(request: Request, sub: str, key_vault: str, principal: str = Form(""), template: str = Form(""),
                        csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    try:
        core.keyvault.set_policy(caller, sub, key_vault, principal.strip(), template or None)
    except HavenError as e:
        return _refuse(request, f"/ui/keyvault#kv-{quote(sub, safe='')}-{quote(key_vault, safe='')}", [e], f"policy:{sub}/{key_vault}",
                       {"principal": principal, "template": template})
    return _go(request, f"/ui/keyvault#kv-{quote(sub, safe='')}-{quote(key_vault, safe='')}",
               f"Access policy saved: {principal.strip()} has the {template} template on {key_vault}.")


@router.post("/s/{sub}/kv/{key_vault}/access-policies/remove")
@form_page(_kv_page)
def keyvault_remove_policy(request: Request, sub: str, key_vault: str, principal: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    core.keyvault.delete_policy(caller, sub, key_vault, principal)
    return _go(request, f"/ui/keyvault#kv-{quote(sub, safe='')}-{quote(key_vault, safe='')}",
               f"Access policy of {principal} removed from {key_vault}.")

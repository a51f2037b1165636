"""Readiness: guest agents and the prepare check."""

from __future__ import annotations

from fastapi import Form, Request

from haven.errors import HavenError
from haven.services.auth import Caller
from haven.web.pages.base import _back, _go, _protection, _render, form_page, router
from haven.web.session import check_csrf, current_caller


@router.post("/readiness/refresh")
@form_page(_back(lambda request: "/ui/readiness"))
def readiness_refresh(request: Request, back: str = Form("/ui/readiness"), csrf: str = Form("")):
    """The server's own hosts report their VMs now; back to the page the button was on."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    done = core.inventory.refresh(caller)
    where = back if back.startswith("/ui/") and "//" not in back else "/ui/readiness"
    hosts = ", ".join(done["refreshed_hosts"]) or "no host of this server"
    return _go(request, where, f"VM list refreshed from {hosts}; remote hosts report on their own every 30 s.")


@router.get("/readiness")
def readiness_page(request: Request, subscription: str = "", check: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    vms = core.inventory.list_vms(caller)
    hosts = core.inventory.list_hosts(caller)
    subs = core.subscriptions.list(caller)
    chosen = next((x for x in subs if subscription in (x["name"], x["id"])), subs[0] if subs else None)
    rows = []
    for vm in vms:
        protected = _protection(core, caller, chosen["name"], vm) if chosen else None
        report = _prepare_report(core, caller, chosen, vm) if check in ("all", vm["name"]) else None
        rows.append({**vm, "check": protected, "prepare": report})
    return _render(request, "readiness.html", caller, vms=rows, hosts=hosts, subs=subs, chosen=chosen, checked=check,
                   prepare_available=True)


def _prepare_report(core, caller: Caller, subscription: dict | None, vm: dict) -> dict | None:
    """The ``prepare check`` report of one VM (``core.prepare.check``, as ``haven prepare check``):
    ``{verdict, ok, checks: [{check, status, reason, fix, code}]}``; an error becomes ``{"error": ...}``."""
    if subscription is None:
        return None
    try:
        return core.prepare.check(caller, subscription["name"], vm["name"], host=vm["host"], timeout=3.0)
    except HavenError as e:
        return {"error": {"code": e.code, "message": e.text, "recommendation": e.fix}}

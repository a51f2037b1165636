"""Vaults: the list, quick create, a vault's page (redundancy, alerts) and the configure-backup wizard."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from haven.domain.enums import JobStatus, Role
from haven.domain.vault import RedundancyLocked
from haven.errors import HavenError, UserError
from haven.services.auth import Caller
from haven.web.session import check_csrf, current_caller
from haven.services.policies import policy_problems
from haven.web.pages.base import _flag, _go, _int_or_none, _protection, _refusal, _refuse, _render, form_page, router, _sub, _vault_url

# ------------------------------------------------------------------ vaults


@router.get("/")
def vaults_page(request: Request):
    core = request.app.state.core
    caller = current_caller(request)
    refused = _refusal(request, "subscription")
    if refused and refused.where == "subscription":
        return _vaults(request, core, caller, refused.error, refused.form.get("name", ""))
    return _vaults(request, core, caller)


def _vaults(request: Request, core, caller: Caller, sub_error=None, sub_name: str = ""):
    since = core.clock.now() - timedelta(hours=24)
    groups = []
    for sub in core.subscriptions.list(caller):
        rows = []
        for v in core.vaults.list(caller, sub["id"]):
            failed = core.jobs.list(caller, sub["id"], v["name"], status=JobStatus.FAILED.value, start=since, limit=1000)
            running = core.jobs.list(caller, sub["id"], v["name"], status=JobStatus.IN_PROGRESS.value, limit=1000)
            rows.append({**v, "failed_24h": len(failed), "running": len(running)})
        groups.append({"sub": sub, "vaults": rows})
    return _render(request, "vaults.html", caller, groups=groups,
                   global_owner=caller.roles.get("*") == Role.OWNER, sub_error=sub_error, sub_name=sub_name)


@router.post("/subscriptions")
@form_page(lambda request: "/ui/")
def create_subscription(request: Request, name: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    try:
        sub = core.subscriptions.create(caller, name.strip())
    except HavenError as e:  # shown beside the form, with what was typed
        return _refuse(request, "/ui/", [e], "subscription", {"name": name})
    return _go(request, "/ui/", f"Subscription {sub['name']} created.")


@router.get("/vaults/new")
def vault_new_page(request: Request, subscription: str | None = None):
    caller = current_caller(request)
    refused = _refusal(request, "vault")
    if refused and refused.where == "vault":
        return _vault_form(request, caller, {"subscription": "", "name": "", "region": "", **refused.form}, refused.error)
    return _vault_form(request, caller, {"subscription": subscription or "", "name": "", "region": ""})


def _vault_form(request: Request, caller: Caller, values: dict, error=None) -> HTMLResponse:
    core = request.app.state.core
    subs = [s for s in core.subscriptions.list(caller) if caller.can(s["id"], Role.CONTRIBUTOR)]
    regions = core.regions.list()
    taken = {s["name"]: [v["name"] for v in core.vaults.list(caller, s["id"])] for s in subs}  # for the live name check
    return _render(request, "vault_new.html", caller, subs=subs, regions=regions, values=values, error=error, taken=taken)


@router.post("/vaults/new")
@form_page(lambda request: "/ui/vaults/new")
def vault_create(request: Request, name: str = Form(""), subscription: str = Form(""), region: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    values = {"name": name, "subscription": subscription, "region": region}
    try:
        vault = core.vaults.create(caller, subscription, name, region)
    except HavenError as e:
        return _refuse(request, "/ui/vaults/new", [e], "vault", values)
    sub = _sub(core, caller, subscription)
    return _go(request, _vault_url(sub["name"], vault["name"]),
               f"Vault {vault['name']} created and Active. Choose its storage redundancy now, before you protect any VM.")


@router.get("/s/{sub}/v/{vault}")
def vault_page(request: Request, sub: str, vault: str):
    core = request.app.state.core
    caller = current_caller(request)
    refused = _refusal(request, "alerts")
    if refused and refused.where == "alerts":
        return _vault(request, core, caller, sub, vault, alert_error=refused.error, alert_form=refused.form)
    return _vault(request, core, caller, sub, vault)


def _vault_page(request: Request) -> str:
    return _vault_url(request.path_params["sub"], request.path_params["vault"])


def _vault(request: Request, core, caller: Caller, sub: str, vault: str, status: int = 200, alert_error=None,
           alert_form: dict | None = None) -> HTMLResponse:
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    items = core.protection.list_items(caller, sub, vault)
    policies = core.policies.list(caller, sub, vault)
    jobs = core.jobs.list(caller, sub, vault, limit=5)
    locked = None
    if v["storage_redundancy_locked"]:
        err = RedundancyLocked(vault=v["name"], count=v["protected_items"])
        locked = {"text": err.text, "fix": err.fix}
    region = next((r for r in core.regions.list() if r["name"] == v["region"]), {"paired_region": None})
    return _render(request, "vault.html", caller, status=status, sub=subscription, vault=v, items=items, policies=policies,
                   jobs=jobs, locked=locked, region=region, base=_vault_url(subscription["name"], v["name"]),
                   alerts=core.alerts.list(caller, sub, vault)[:50], alert_error=alert_error, alert_form=alert_form or {})


@router.post("/s/{sub}/v/{vault}/alerts")
@form_page(_vault_page)
def vault_alerts(request: Request, sub: str, vault: str, webhook: str = Form(""), email: str = Form(""),
                 clear_webhook: str = Form(""), clear_email: str = Form(""), csrf: str = Form("")):
    """Alert targets: ``core.alerts.configure`` (as ``PUT …/alert-settings``). An empty field keeps the current value."""
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    hook = "" if _flag(clear_webhook) else (webhook.strip() or None)
    mail = "" if _flag(clear_email) else (email.strip() or None)
    try:
        done = core.alerts.configure(caller, sub, vault, hook, mail)
    except HavenError as e:
        # A webhook URL often holds a secret token in its path or query: it never travels in a redirect's address.
        return _refuse(request, _vault_url(sub, vault), [e], "alerts", {"email": email})
    return _go(request, _vault_url(sub, vault),
               f"Alerts of {vault} go to webhook {_webhook_site(done['webhook'])} and e-mail {done['email'] or '(none)'}.")


def _webhook_site(url: str | None) -> str:
    """The webhook's scheme and host only, for a notice that travels in an address."""
    if not url:
        return "(none)"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


@router.post("/s/{sub}/v/{vault}/redundancy")
@form_page(_vault_page)
def vault_redundancy(request: Request, sub: str, vault: str, redundancy: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    if hasattr(core.vaults, "set_properties"):
        v = core.vaults.set_properties(caller, sub, vault, redundancy=redundancy)
    else:  # older core
        v = core.vaults.set_redundancy(caller, sub, vault, redundancy)
    return _go(request, _vault_url(sub, vault), f"Storage redundancy of {v['name']} is {v['storage_redundancy']}.")


# ------------------------------------------------------------------ configure backup: goal -> policy -> VMs -> enable


@router.get("/s/{sub}/v/{vault}/configure")
def configure_page(request: Request, sub: str, vault: str, step: str = "goal", policy: str | None = None,
                   workload: str | None = None, what: str | None = None, selected: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    # the VMs ticked so far (kept in the address by the page's script, so a reload keeps them)
    ticked = [ref for ref in selected.split(",") if ref][:500]
    refused = _refusal(request, "policy", "vms")
    if refused and refused.where in ("policy", "vms"):
        form = {**refused.form, "vms": ticked} if ticked else refused.form
        return _configure(request, core, caller, sub, vault, refused.where, policy,
                          errors=[{"vm": e.vm, "error": e} for e in refused.errors], done=refused.form.get("done"), form=form)
    return _configure(request, core, caller, sub, vault, step, policy, form={"vms": ticked} if ticked else None)


def _key_vault_access(core, vm: dict, subscription_id: str) -> dict | None:
    """Seed 003's notice for an encrypted VM chosen in the wizard: its key vault, and whether the backup
    service may read its keys and secrets there (the problem, with its fix, when not)."""
    enc = vm.get("encryption")
    if not enc:
        return None
    try:
        core.keyvault.check_backup_access(enc, subscription_id)
    except HavenError as e:
        return {"key_vault": enc.get("key_vault"), "problem": e}
    return {"key_vault": enc.get("key_vault"), "problem": None}


def _configure(request, core, caller, sub, vault, step, policy, errors=None, done=None, form=None, status=200):
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    policies = core.policies.list(caller, sub, vault)
    vms = []
    if step == "vms":
        core.policies.show(caller, sub, vault, policy or "DefaultPolicy")  # the chosen policy exists
        for vm in core.inventory.list_vms(caller, v["region"], subscription=sub):
            vms.append({**vm, "check": _protection(core, caller, sub, vm)
                        or {"protected": True, "vault": "another subscription", "state": "Protected"},
                        "key_access": _key_vault_access(core, vm, v["subscription_id"])})
    if step not in ("goal", "policy", "vms"):
        step = "goal"
    return _render(request, "configure.html", caller, status=status, sub=subscription, vault=v, step=step, policies=policies,
                   policy=policy or "DefaultPolicy", vms=vms, errors=errors or [], done=done or [], form=form or {},
                   base=_vault_url(subscription["name"], v["name"]))


def _configure_page(step: str):
    return lambda request: f"{_vault_page(request)}/configure?" + urlencode({"step": step})


@router.post("/s/{sub}/v/{vault}/configure/policy")
@form_page(_configure_page("policy"))
def configure_policy(request: Request, sub: str, vault: str, name: str = Form(""), frequency: str = Form("daily"),
                     time: str = Form("22:30"), tz: str = Form("UTC"), weekdays: list[int] = Form([]),
                     daily_days: str = Form(""), weekly_weeks: str = Form(""), monthly_months: str = Form(""),
                     yearly_years: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"name": name, "frequency": frequency, "time": time, "tz": tz, "weekdays": weekdays, "daily_days": daily_days,
            "weekly_weeks": weekly_weeks, "monthly_months": monthly_months, "yearly_years": yearly_years}
    v = core.vaults.show(caller, sub, vault)
    caller.require(v["subscription_id"], Role.CONTRIBUTOR)  # who may, before what is wrong with the form
    schedule = {"frequency": frequency, "times": [time], "timezone": tz or "UTC"}
    if frequency == "weekly":
        schedule["weekdays"] = weekdays
    problems: list[HavenError] = []
    retention: dict = {}
    for field, text in (("daily_days", daily_days), ("weekly_weeks", weekly_weeks), ("monthly_months", monthly_months),
                        ("yearly_years", yearly_years)):
        try:
            retention[field] = _int_or_none(text)
        except HavenError as e:
            problems.append(e)
    if frequency == "weekly" and weekdays:
        retention["weekly_days"] = weekdays
    problems += [] if problems else policy_problems(name.strip(), schedule, retention)  # every problem of the form at once
    try:
        if problems:
            raise problems[0]
        created = core.policies.create(caller, sub, vault, name.strip(), schedule, retention)
    except HavenError as e:
        return _refuse(request, f"{_vault_url(sub, vault)}/configure?step=policy", problems or [e], "policy", form)
    return _go(request, f"{_vault_url(sub, vault)}/configure?" + urlencode({"step": "vms", "policy": created["name"]}),
               f"Policy {created['name']} created.")


@router.post("/s/{sub}/v/{vault}/configure/enable")
@form_page(_configure_page("vms"))
def configure_enable(request: Request, sub: str, vault: str, policy: str = Form("DefaultPolicy"), vms: list[str] = Form([]),
                     csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    back = f"{_vault_url(sub, vault)}/configure?" + urlencode({"step": "vms", "policy": policy})
    if not vms:
        err = UserError("No VM was selected.", "Tick at least one VM in the list, then choose Enable backup.")
        return _refuse(request, back, [err], "vms")
    errors, done = [], []
    for ref in vms:
        vm, _, host = ref.partition("@")
        try:
            core.protection.enable(caller, sub, vault, vm, policy, host or None)
            done.append(vm)
        except HavenError as e:
            errors.append({"vm": vm, "error": e})
    if errors:
        failed = {e["vm"] for e in errors}
        still = [ref for ref in vms if ref.partition("@")[0] in failed]  # still ticked: fix and send again
        return _refuse(request, back + "&" + urlencode({"selected": ",".join(still)}), [(e["vm"], e["error"]) for e in errors], "vms",
                       {"done": done})
    return _go(request, _vault_url(sub, vault), f"Backup enabled for {', '.join(done)} with policy {policy}.")


# ------------------------------------------------------------------ protected items, backup now, stop protection, restore

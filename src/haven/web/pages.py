"""The dashboard's pages: each one authenticates the session and calls the same service methods as the API.

URLs use the subscription's *name* (services accept a name or an id)::

    /ui/                                    vaults of every visible subscription, with status and health
    /ui/vaults/new                          quick create (name, subscription, region)
    /ui/s/{sub}/v/{vault}                   the vault: quick start, storage redundancy, usage, items, policies
    /ui/s/{sub}/v/{vault}/configure         configure backup: goal -> policy -> VMs -> enable backup
    /ui/s/{sub}/v/{vault}/items/{vm}        a protected item: recovery points (timeline), restore disks, restore VM,
                                            replace disks (with a confirmation step), file recovery mounts
    POST …/items/{vm}/restore-vm|replace-disks|mount|unmount   -> core.restore (as the API's restore routes)
    POST /ui/s/{sub}/v/{vault}/alerts       alert webhook/e-mail -> core.alerts.configure
    /ui/jobs                                jobs of every visible vault, with filters and live progress
    /ui/s/{sub}/jobs/{id}                   a job: subtasks, warnings, error with its fix (live)
    /ui/readiness, /ui/keyvault             guest-agent readiness and prepare check; key vaults and access policies
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from haven.domain.enums import JobStatus, JobType, Role
from haven.domain.vault import RedundancyLocked
from haven.errors import HavenError, UserError
from haven.services.auth import Caller
from haven.web.session import (
    COOKIE,
    COOKIE_PATH,
    PRESESSION_COOKIE,
    SessionMissing,
    SignInRequired,
    check_csrf,
    check_signin_csrf,
    csrf_token,
    current_caller,
    new_presession,
    reason_text,
    session_secret,
    signin_csrf,
)

__all__ = ["router", "templates"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

FINISHED = {s.value for s in JobStatus if s.finished}
ACTIVE = {JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value}


# ------------------------------------------------------------------ formatting helpers (template filters)


def _dt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(value: Any) -> str:
    if value is None:
        return "—"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)


def _duration(value: Any) -> str:
    if value is None:
        return "—"
    secs = float(value)
    if secs < 60:
        return f"{secs:.1f} s"
    mins, s = divmod(int(secs), 60)
    if mins < 60:
        return f"{mins} min {s} s"
    h, m = divmod(mins, 60)
    return f"{h} h {m} min"


def _percent(job: dict) -> float | None:
    subtasks = job.get("subtasks") or []
    if job.get("status") in FINISHED:
        return 100.0 if job.get("status") in (JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_WARNINGS.value) else None
    if not subtasks:
        return 0.0 if job.get("status") in ACTIVE else None
    values = [float(t.get("percent") or (100.0 if t.get("status") == "Completed" else 0.0)) for t in subtasks]
    return round(sum(values) / len(values), 1)


def _schedule_text(schedule: dict) -> str:
    freq = schedule.get("frequency", "?")
    times = ", ".join(schedule.get("times") or [])
    tz = schedule.get("timezone") or "UTC"
    if freq == "weekly":
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        days = ", ".join(names[d] for d in schedule.get("weekdays") or [] if isinstance(d, int) and 0 <= d < 7)
        return f"Weekly on {days} at {times} ({tz})"
    if freq == "hourly":
        return f"Every {schedule.get('hourly_interval')} h from {times} for {schedule.get('hourly_window_hours')} h ({tz})"
    return f"Daily at {times} ({tz})"


def _retention_text(retention: dict) -> str:
    parts = []
    for key, unit in (("daily_days", "daily points {} days"), ("weekly_weeks", "weekly points {} weeks"),
                      ("monthly_months", "monthly points {} months"), ("yearly_years", "yearly points {} years")):
        if retention.get(key):
            parts.append(unit.format(retention[key]))
    return "; ".join(parts) or "—"


def _verdict(vm: dict) -> dict:
    """What a backup of this VM will look like now: the seeds' rule (running + agent -> application-consistent)."""
    agent = vm.get("guest_agent") or {}
    power = vm.get("power_state")
    if power == "missing":
        return {"level": "bad", "text": "Not reported by its host any more", "consistency": "—"}
    if agent.get("problem"):
        detail = agent.get("problem")
        fix = agent.get("recommendation")
    else:
        detail, fix = None, None
    if power == "running" and agent.get("present") and agent.get("answering") and agent.get("version_ok") is not False:
        return {"level": "ok", "text": f"Guest agent {agent.get('version') or ''} answering".strip(), "consistency": "Application-consistent",
                "detail": detail, "fix": fix}
    if power == "running":
        return {"level": "warn", "text": "Running without a usable guest agent", "consistency": "Crash-consistent",
                "detail": detail or "The guest agent (qemu-guest-agent) is missing, not answering or too old.",
                "fix": fix or "Install or start qemu-guest-agent in the guest for application-consistent recovery points."}
    return {"level": "info", "text": f"VM is {power or 'unknown'}", "consistency": "Crash-consistent",
            "detail": detail or "A stopped VM is still backed up; its recovery points are crash-consistent.", "fix": fix}


templates.env.filters.update(dt=_dt, size=_size, duration=_duration, schedule=_schedule_text, retention=_retention_text, q=lambda s: quote(str(s), safe=""))
templates.env.globals.update(percent=_percent, verdict=_verdict, FINISHED=FINISHED, ACTIVE=ACTIVE)


# ------------------------------------------------------------------ routing: pages answer HTML, errors included


def _error_page(request: Request, exc: HavenError) -> Response:
    caller = None
    try:
        caller = current_caller(request)
    except SignInRequired:
        pass
    return _render(request, "error.html", caller, status=exc.http_status if exc.http_status >= 400 else 500,
                   error=exc, back=request.headers.get("referer"))


class PageRoute(APIRoute):
    """Routes whose errors render as pages: sign-in redirects, and errors with their code, message and fix."""

    def get_route_handler(self) -> Callable:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except SignInRequired as e:
                if request.method != "GET":
                    return _error_page(request, SessionMissing())
                params = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
                if e.reason:
                    params["reason"] = e.reason
                return RedirectResponse("/ui/signin?" + urlencode(params), status_code=303)
            except HavenError as e:
                return _error_page(request, e)
            except RequestValidationError as e:
                problems = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:5])
                return _error_page(request, UserError(f"The form is invalid: {problems}", "Fill in the fields named above and submit again."))

        return handler


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)


def _render(request: Request, name: str, caller: Caller | None, status: int = 200, **ctx) -> HTMLResponse:
    core = request.app.state.core
    roles = {}
    if caller is not None:
        try:
            names = {s["id"]: s["name"] for s in core.subscriptions.list(caller)}
        except HavenError:
            names = {}
        roles = {("all subscriptions" if k == "*" else names.get(k, k)): v.value for k, v in caller.roles.items()}
    context = {
        "caller": caller,
        "roles": roles,
        "csrf": csrf_token(request) if caller is not None else "",
        "msg": _notice(request),
        "can": (lambda sub_id, role: caller is not None and caller.can(sub_id, Role(role))),
        "path": request.url.path,
        **ctx,
    }
    return templates.TemplateResponse(request, name, context, status_code=status)


def _go(request: Request, url: str, msg: str | None = None) -> RedirectResponse:
    """Redirect after a post (303), with a signed one-line notice for the next page."""
    if msg:
        url += ("&" if "?" in url else "?") + urlencode({"msg": msg, "sig": _sign(request, msg)})
    return RedirectResponse(url, status_code=303)


def _sign(request: Request, msg: str) -> str:
    return hmac.new(request.app.state.web_secret, b"msg:" + msg.encode(), hashlib.sha256).hexdigest()[:24]


def _notice(request: Request) -> str | None:
    """The notice from the query string, only when this server signed it (no text injected through links)."""
    msg, sig = request.query_params.get("msg"), request.query_params.get("sig") or ""
    if msg and hmac.compare_digest(sig, _sign(request, msg)):
        return msg
    return None


def _vault_url(sub: str, vault: str) -> str:
    return f"/ui/s/{quote(sub, safe='')}/v/{quote(vault, safe='')}"


def _sub(core, caller: Caller, sub: str) -> dict:
    return core.subscriptions.show(caller, sub)


# ------------------------------------------------------------------ sign-in


@router.get("/signin")
def signin_page(request: Request, next: str = "/ui/", reason: str | None = None):
    return _signin_form(request, next=_safe_next(next), reason=reason_text(reason))


def _signin_form(request: Request, status: int = 200, **ctx) -> HTMLResponse:
    """The sign-in form, with a fresh pre-session cookie and the CSRF token bound to it."""
    presession = new_presession()
    resp = _render(request, "signin.html", None, status=status, signin_csrf=signin_csrf(request, presession), **ctx)
    resp.set_cookie(PRESESSION_COOKIE, presession, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path="/ui/signin", max_age=3600)
    return resp


@router.post("/signin")
def signin(request: Request, token: str = Form(""), next: str = Form("/ui/"), csrf: str = Form("")):
    core = request.app.state.core
    check_signin_csrf(request, csrf)  # a forged sign-in changes nothing: the browser keeps its session
    try:
        started = core.web_sessions.start(token.strip())
    except HavenError as e:
        return _signin_form(request, status=e.http_status, next=_safe_next(next), error=e)
    core.web_sessions.end(session_secret(request))  # the session this browser had before, if any
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, started.secret, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path=COOKIE_PATH, max_age=max(1, int((started.expires_at - core.clock.now()).total_seconds())))
    resp.delete_cookie(PRESESSION_COOKIE, path="/ui/signin")
    resp.delete_cookie(COOKIE, path="/")  # a cookie of earlier versions, which held the token itself
    return resp


@router.post("/signout")
def signout(request: Request, csrf: str = Form("")):
    check_csrf(request, csrf)
    request.app.state.core.web_sessions.end(session_secret(request))
    resp = RedirectResponse("/ui/signin?reason=signed-out", status_code=303)
    resp.delete_cookie(COOKIE, path=COOKIE_PATH)
    return resp


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/ui/") or value.startswith("//") or "\\" in value:
        return "/ui/"
    return value


# ------------------------------------------------------------------ vaults


@router.get("/")
def vaults_page(request: Request):
    core = request.app.state.core
    caller = current_caller(request)
    since = core.clock.now() - timedelta(hours=24)
    groups = []
    for sub in core.subscriptions.list(caller):
        rows = []
        for v in core.vaults.list(caller, sub["id"]):
            failed = core.jobs.list(caller, sub["id"], v["name"], status=JobStatus.FAILED.value, start=since, limit=1000)
            running = core.jobs.list(caller, sub["id"], v["name"], status=JobStatus.IN_PROGRESS.value, limit=1000)
            rows.append({**v, "failed_24h": len(failed), "running": len(running)})
        groups.append({"sub": sub, "vaults": rows})
    return _render(request, "vaults.html", caller, groups=groups, global_owner=caller.roles.get("*") == Role.OWNER)


@router.post("/subscriptions")
def create_subscription(request: Request, name: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    sub = core.subscriptions.create(caller, name.strip())
    return _go(request, "/ui/", f"Subscription {sub['name']} created.")


@router.get("/vaults/new")
def vault_new_page(request: Request, subscription: str | None = None):
    caller = current_caller(request)
    return _vault_form(request, caller, {"subscription": subscription or "", "name": "", "region": ""})


def _vault_form(request: Request, caller: Caller, values: dict, error: HavenError | None = None) -> HTMLResponse:
    core = request.app.state.core
    subs = [s for s in core.subscriptions.list(caller) if caller.can(s["id"], Role.CONTRIBUTOR)]
    regions = core.regions.list()
    return _render(request, "vault_new.html", caller, status=error.http_status if error else 200,
                   subs=subs, regions=regions, values=values, error=error)


@router.post("/vaults/new")
def vault_create(request: Request, name: str = Form(""), subscription: str = Form(""), region: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    values = {"name": name, "subscription": subscription, "region": region}
    try:
        vault = core.vaults.create(caller, subscription, name, region)
    except HavenError as e:
        return _vault_form(request, caller, values, e)
    sub = _sub(core, caller, subscription)
    return _go(request, _vault_url(sub["name"], vault["name"]),
               f"Vault {vault['name']} created and Active. Choose its storage redundancy now, before you protect any VM.")


@router.get("/s/{sub}/v/{vault}")
def vault_page(request: Request, sub: str, vault: str):
    core = request.app.state.core
    caller = current_caller(request)
    return _vault(request, core, caller, sub, vault)


def _vault(request: Request, core, caller: Caller, sub: str, vault: str, status: int = 200, alert_error: HavenError | None = None,
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
        return _vault(request, core, caller, sub, vault, status=e.http_status, alert_error=e,
                      alert_form={"webhook": webhook, "email": email})
    return _go(request, _vault_url(sub, vault),
               f"Alerts of {vault} go to webhook {done['webhook'] or '(none)'} and e-mail {done['email'] or '(none)'}.")


@router.post("/s/{sub}/v/{vault}/redundancy")
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
                   workload: str | None = None, what: str | None = None):
    core = request.app.state.core
    caller = current_caller(request)
    return _configure(request, core, caller, sub, vault, step, policy)


def _configure(request, core, caller, sub, vault, step, policy, errors=None, done=None, form=None, status=200):
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    policies = core.policies.list(caller, sub, vault)
    vms = []
    if step == "vms":
        core.policies.show(caller, sub, vault, policy or "DefaultPolicy")  # the chosen policy exists
        for vm in core.inventory.list_vms(caller, v["region"], subscription=sub):
            vms.append({**vm, "check": _protection(core, caller, sub, vm)
                        or {"protected": True, "vault": "another subscription", "state": "Protected"}})
    if step not in ("goal", "policy", "vms"):
        step = "goal"
    return _render(request, "configure.html", caller, status=status, sub=subscription, vault=v, step=step, policies=policies,
                   policy=policy or "DefaultPolicy", vms=vms, errors=errors or [], done=done or [], form=form or {},
                   base=_vault_url(subscription["name"], v["name"]))


def _int_or_none(value: str | None) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{value!r} is not a whole number.", "Give retention counts as whole numbers, or leave them empty.") from None


@router.post("/s/{sub}/v/{vault}/configure/policy")
def configure_policy(request: Request, sub: str, vault: str, name: str = Form(""), frequency: str = Form("daily"),
                     time: str = Form("22:30"), tz: str = Form("UTC"), weekdays: list[int] = Form([]),
                     daily_days: str = Form(""), weekly_weeks: str = Form(""), monthly_months: str = Form(""),
                     yearly_years: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    form = {"name": name, "frequency": frequency, "time": time, "tz": tz, "weekdays": weekdays, "daily_days": daily_days,
            "weekly_weeks": weekly_weeks, "monthly_months": monthly_months, "yearly_years": yearly_years}
    try:
        schedule = {"frequency": frequency, "times": [time], "timezone": tz or "UTC"}
        if frequency == "weekly":
            schedule["weekdays"] = weekdays
        retention = {"daily_days": _int_or_none(daily_days), "weekly_weeks": _int_or_none(weekly_weeks),
                     "monthly_months": _int_or_none(monthly_months), "yearly_years": _int_or_none(yearly_years)}
        if frequency == "weekly" and weekdays:
            retention["weekly_days"] = weekdays
        created = core.policies.create(caller, sub, vault, name.strip(), schedule, retention)
    except HavenError as e:
        return _configure(request, core, caller, sub, vault, "policy", None, errors=[{"vm": None, "error": e}], form=form,
                          status=e.http_status)
    return _go(request, f"{_vault_url(sub, vault)}/configure?" + urlencode({"step": "vms", "policy": created["name"]}),
               f"Policy {created['name']} created.")


@router.post("/s/{sub}/v/{vault}/configure/enable")
def configure_enable(request: Request, sub: str, vault: str, policy: str = Form("DefaultPolicy"), vms: list[str] = Form([]),
                     csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    if not vms:
        err = UserError("No VM was selected.", "Tick at least one VM in the list, then choose Enable backup.")
        return _configure(request, core, caller, sub, vault, "vms", policy, errors=[{"vm": None, "error": err}], status=400)
    errors, done = [], []
    for ref in vms:
        vm, _, host = ref.partition("@")
        try:
            core.protection.enable(caller, sub, vault, vm, policy, host or None)
            done.append(vm)
        except HavenError as e:
            errors.append({"vm": vm, "error": e})
    if errors:
        return _configure(request, core, caller, sub, vault, "vms", policy, errors=errors, done=done,
                          status=max(e["error"].http_status for e in errors))
    return _go(request, _vault_url(sub, vault), f"Backup enabled for {', '.join(done)} with policy {policy}.")


# ------------------------------------------------------------------ protected items, backup now, stop protection, restore


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
    return _render(request, "item.html", caller, status=status, sub=subscription, vault=v, item=item, points=points, days=days,
                   default_point=default_point, jobs=jobs, policies=policies, base=_vault_url(subscription["name"], v["name"]), secondary=secondary,
                   machine=machine, hosts=hosts, mounts=mounts, errors=errors or {}, form=form or {}, option=chosen,
                   top_errors=top)


@router.post("/s/{sub}/v/{vault}/items/{vm}/backup")
def item_backup(request: Request, sub: str, vault: str, vm: str, retain_days: str = Form(""), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    days = _int_or_none(retain_days)
    retain_until = core.clock.now() + timedelta(days=days) if days else None
    job = core.protection.backup_now(caller, sub, vault, vm, retain_until)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job['id']}", f"Backup of {vm} started.")


@router.post("/s/{sub}/v/{vault}/items/{vm}/stop")
def item_stop(request: Request, sub: str, vault: str, vm: str, data: str = Form("keep"), csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    if data not in ("keep", "delete"):
        raise UserError(f"Unknown choice {data!r} for the backup data.", "Choose 'keep' or 'delete'.")
    item = core.protection.disable(caller, sub, vault, vm, delete_backup_data=data == "delete")
    what = "its backup data is kept" if data == "keep" else "its backup data is soft-deleted"
    return _go(request, _vault_url(sub, vault), f"Protection of {vm} stopped ({item['protection_state']}); {what}.")


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


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "on", "yes", "true")


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


# ------------------------------------------------------------------ jobs


def _visible_vaults(core, caller: Caller) -> list[tuple[dict, dict]]:
    out = []
    for sub in core.subscriptions.list(caller):
        for v in core.vaults.list(caller, sub["id"]):
            out.append((sub, v))
    return out


@router.get("/jobs")
def jobs_page(request: Request, vault: str = "", status: str = "", type: str = "", vm: str = "", hours: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    vaults = _visible_vaults(core, caller)
    start = None
    if hours.strip():
        h = _int_or_none(hours)
        start = core.clock.now() - timedelta(hours=h) if h else None
    jobs = []
    for sub, v in vaults:
        key = f"{sub['name']}/{v['name']}"
        if vault and vault != key:
            continue
        for j in core.jobs.list(caller, sub["id"], v["name"], status or None, type or None, vm or None, start, None, 200):
            jobs.append({**j, "sub": sub["name"], "vault": v["name"]})
    jobs.sort(key=lambda j: j["created_at"], reverse=True)
    filters = {"vault": vault, "status": status, "type": type, "vm": vm, "hours": hours}
    return _render(request, "jobs.html", caller, jobs=jobs[:300], vaults=vaults, filters=filters,
                   statuses=[s.value for s in JobStatus], types=[t.value for t in JobType])


@router.get("/s/{sub}/jobs/{job_id}")
def job_page(request: Request, sub: str, job_id: str):
    core = request.app.state.core
    caller = current_caller(request)
    subscription = _sub(core, caller, sub)
    job = core.jobs.show(caller, sub, job_id)
    vault = next((v for s, v in _visible_vaults(core, caller) if v["id"] == job["vault_id"]), None)
    return _render(request, "job.html", caller, sub=subscription, job=job, vault=vault)


@router.get("/s/{sub}/jobs/{job_id}/status")
def job_status(request: Request, sub: str, job_id: str):
    """Live progress for the pages' polling script (authenticated by the session cookie)."""
    core = request.app.state.core
    try:
        caller = current_caller(request)
        job = core.jobs.show(caller, sub, job_id)
    except SignInRequired:
        return JSONResponse({"error": "signed out"}, status_code=401)
    except HavenError as e:
        return JSONResponse(e.to_payload(), status_code=e.http_status)
    pct = _percent(job)
    active = next((t["name"] for t in job["subtasks"] if t.get("status") == "InProgress"), None)
    return JSONResponse(jsonable_encoder({
        "id": job["id"], "status": job["status"], "finished": job["status"] in FINISHED,
        "percent": None if pct is None or math.isnan(pct) else pct, "active": active,
        "duration": _duration(job["duration_seconds"]), "subtasks": job["subtasks"], "error": job["error"],
    }))


@router.post("/s/{sub}/jobs/{job_id}/stop")
def job_stop(request: Request, sub: str, job_id: str, csrf: str = Form("")):
    core = request.app.state.core
    caller = current_caller(request)
    check_csrf(request, csrf)
    core.jobs.stop(caller, sub, job_id)
    return _go(request, f"/ui/s/{quote(sub, safe='')}/jobs/{job_id}", "Cancellation requested.")


# ------------------------------------------------------------------ readiness (prepare check) and key vault


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


def _protection(core, caller: Caller, sub: str, vm: dict) -> dict | None:
    """``check_vm`` of a VM listed on a page; another subscription's vault shows as just that (never named)."""
    try:
        check = core.protection.check_vm(caller, sub, vm["name"], vm["host"])
    except HavenError:
        return None
    return {**check, "protected": True, "vault": "another subscription"} if check.get("other_subscription") else check


def _prepare_report(core, caller: Caller, subscription: dict | None, vm: dict) -> dict | None:
    """The ``prepare check`` report of one VM (``core.prepare.check``, as ``haven prepare check``):
    ``{verdict, ok, checks: [{check, status, reason, fix, code}]}``; an error becomes ``{"error": ...}``."""
    if subscription is None:
        return None
    try:
        return core.prepare.check(caller, subscription["name"], vm["name"], host=vm["host"], timeout=3.0)
    except HavenError as e:
        return {"error": {"code": e.code, "message": e.text, "recommendation": e.fix}}


@router.get("/keyvault")
def keyvault_page(request: Request):
    """Key vaults and their access policies (``core.keyvault.list``/``show``), with the ``Haven Backup`` template."""
    core = request.app.state.core
    caller = current_caller(request)
    groups, problem = [], None
    try:
        for sub in core.subscriptions.list(caller):
            vaults = [core.keyvault.show(caller, sub["id"], kv["name"]) for kv in core.keyvault.list(caller, sub["id"])]
            groups.append({"sub": sub, "vaults": vaults})
    except HavenError as e:
        problem = e
    return _render(request, "keyvault.html", caller, service=core.keyvault, groups=groups, problem=problem)

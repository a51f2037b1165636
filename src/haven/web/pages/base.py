"""The dashboard's shared page machinery: templates and their filters, error pages, rendering, signed notices."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from haven.domain.enums import Role
from haven.errors import HavenError, UserError
from haven.services.auth import Caller
from haven.web.pages.present import (
    ACTIVE, FINISHED, _dt, _duration, _job_label, _percent, _result_rows, _retention_text, _schedule_text, _size, _verdict,
)
from haven.web.session import CrossOriginRefused, CsrfInvalid, SessionMissing, SignInRequired, csrf_token, current_caller, session_secret

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

templates.env.filters.update(job_label=_job_label, dt=_dt, size=_size, duration=_duration, schedule=_schedule_text, retention=_retention_text, q=lambda s: quote(str(s), safe=""))
templates.env.globals.update(percent=_percent, verdict=_verdict, result_rows=_result_rows, FINISHED=FINISHED, ACTIVE=ACTIVE)


# ------------------------------------------------------------------ routing: pages answer HTML, errors included


def _error_page(request: Request, exc: HavenError) -> Response:
    caller = None
    try:
        caller = current_caller(request)
    except SignInRequired:
        pass
    return _render(request, "error.html", caller, status=exc.http_status if exc.http_status >= 400 else 500,
                   error=exc, back=request.headers.get("referer"))


#: Refusals answered in the post's own response: they do not come from a form of this browser's session
#: (no session, a forged or foreign post), so there is no page of that session to go back to.
_NOT_A_FORM = (SessionMissing, CsrfInvalid, CrossOriginRefused)


def form_page(page: Callable[[Request], str]):
    """Names the page a form posted to this route belongs to (``page(request)`` -> its URL): a refused
    post goes back there (303), its error carried in the signed flash, so a reload never re-posts."""

    def mark(endpoint):
        endpoint.form_page = page
        return endpoint

    return mark


class PageRoute(APIRoute):
    """Routes whose errors render as pages: sign-in redirects, and errors with their code, message and fix.
    A refused form post is redirected back to its page (``form_page``) with the error (Post/Redirect/Get)."""

    def get_route_handler(self) -> Callable:
        original = super().get_route_handler()
        page = getattr(self.endpoint, "form_page", None)

        def refused(request: Request, exc: HavenError) -> Response:
            if request.method != "GET" and page is not None and not isinstance(exc, _NOT_A_FORM):
                return _refuse(request, page(request), [exc])
            return _error_page(request, exc)

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
                return refused(request, e)
            except RequestValidationError as e:
                problems = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:5])
                return refused(request, UserError(f"The form is invalid: {problems}", "Fill in the fields named above and submit again."))

        return handler


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)  # every page module adds its routes


def _render(request: Request, name: str, caller: Caller | None, status: int = 200, **ctx) -> HTMLResponse:
    core = request.app.state.core
    roles = {}
    if caller is not None:
        try:
            names = {s["id"]: s["name"] for s in core.subscriptions.list(caller)}
        except HavenError:
            names = {}
        roles = {("all subscriptions" if k == "*" else names.get(k, k)): v.value for k, v in caller.roles.items()}
    refusal = _refusal(request)
    context = {
        "caller": caller,
        "roles": roles,
        "csrf": csrf_token(request) if caller is not None else "",
        "msg": _notice(request),
        "refused_top": [] if refusal is None or getattr(request.state, "refusal_placed", False) else refusal.errors,
        "can": (lambda sub_id, role: caller is not None and caller.can(sub_id, Role(role))),
        "path": request.url.path,
        **ctx,
    }
    return templates.TemplateResponse(request, name, context, status_code=status)


def _go(request: Request, url: str, msg: str | None = None, refusal: dict | None = None) -> RedirectResponse:
    """Redirect after a post (303), with a signed one-line notice and/or a refusal (``_refuse``) for the next page."""
    params = {}
    if msg:
        params.update(msg=msg, sig=_sign(request, msg))
    if refusal:
        blob = base64.urlsafe_b64encode(json.dumps(refusal, separators=(",", ":")).encode()).decode().rstrip("=")
        params.update(err=blob, esig=_sign(request, blob, b"err:" + (session_secret(request) or "").encode() + b":"))
    if params:
        url, hash_, fragment = url.partition("#")
        url += ("&" if "?" in url else "?") + urlencode(params) + hash_ + fragment
    return RedirectResponse(url, status_code=303)


def _sign(request: Request, msg: str, purpose: bytes = b"msg:") -> str:
    return hmac.new(request.app.state.web_secret, purpose + msg.encode(), hashlib.sha256).hexdigest()[:24]


def _notice(request: Request) -> str | None:
    """The notice from the query string, only when this server signed it (no text injected through links)."""
    msg, sig = request.query_params.get("msg"), request.query_params.get("sig") or ""
    if msg and hmac.compare_digest(sig, _sign(request, msg)):
        return msg
    return None


# ------------------------------------------------------------------ refused forms: Post/Redirect/Get with the error


@dataclass
class Shown:
    """A refusal's error as the next page shows it (what ``_error.html`` reads)."""

    code: str
    text: str
    fix: str
    http_status: int
    vm: str | None = None

    @property
    def ui_fix(self) -> str:
        return self.fix


@dataclass
class Refusal:
    """What a refused post carries to its page: the errors, where the page shows them, what was typed."""

    errors: list[Shown]
    where: str = ""
    form: dict = field(default_factory=dict)

    @property
    def error(self) -> Shown:
        return self.errors[0]

    @property
    def status(self) -> int:
        return max(e.http_status for e in self.errors)


def _refuse(request: Request, url: str, errors: list, where: str = "", form: dict | None = None, msg: str | None = None) -> RedirectResponse:
    """Send a refused post back to its page (303): ``errors`` (HavenErrors, or ``(vm, HavenError)`` pairs) are shown
    there, beside the form ``where`` names (at the top when the page has no such place), the form filled in
    again from ``form``. Signed for this session, so a link cannot make a page show an error it did not have."""
    shown = []
    for e in errors:
        vm, e = e if isinstance(e, tuple) else (None, e)
        shown.append([e.code, e.text, e.ui_fix or e.fix, e.http_status if e.http_status >= 400 else 500, vm])
    return _go(request, url, msg, {"e": shown, "w": where, "f": form or {}})


def _back(default: Callable[[Request], str]) -> Callable[[Request], str]:
    """For a form shown on several pages (an item's actions): the page it was posted from (this server's own,
    by the Referer a same-origin post carries), else ``default``; without any notice the page had."""

    def page(request: Request) -> str:
        parts = urlsplit(request.headers.get("referer") or "")
        if f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}" and parts.path.startswith("/ui/") \
                and "//" not in parts.path and parts.path != request.url.path:
            query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("msg", "sig", "err", "esig")])
            return parts.path + (f"?{query}" if query else "")
        return default(request)

    return page


def _refusal(request: Request, *places: str) -> Refusal | None:
    """The refusal this page was sent back with (only one this server signed for this session). When its place
    is one of ``places`` the page shows it there; otherwise the layout shows it at the top."""
    blob, sig = request.query_params.get("err"), request.query_params.get("esig") or ""
    if not blob or not hmac.compare_digest(sig, _sign(request, blob, b"err:" + (session_secret(request) or "").encode() + b":")):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
        found = Refusal([Shown(*e) for e in data["e"]], data.get("w") or "", data.get("f") or {})
    except (ValueError, TypeError, KeyError):
        return None
    if found.where and found.where in places:
        request.state.refusal_placed = True
    return found


def _vault_url(sub: str, vault: str) -> str:
    return f"/ui/s/{quote(sub, safe='')}/v/{quote(vault, safe='')}"


def _sub(core, caller: Caller, sub: str) -> dict:
    return core.subscriptions.show(caller, sub)


def _int_or_none(value: str | None) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{value!r} is not a whole number.", "Give retention counts as whole numbers, or leave them empty.") from None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "on", "yes", "true")


def _protection(core, caller: Caller, sub: str, vm: dict) -> dict | None:
    """``check_vm`` of a VM listed on a page; another subscription's vault shows as just that (never named)."""
    try:
        check = core.protection.check_vm(caller, sub, vm["name"], vm["host"])
    except HavenError:
        return None
    return {**check, "protected": True, "vault": "another subscription"} if check.get("other_subscription") else check

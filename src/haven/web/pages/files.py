"""File recovery in the browser, straight from the vault (``services.files``): a point's volumes and
folders with breadcrumbs, a file's details, a file or a whole folder (tar) downloaded, and a file
name found across the points. Nothing is mounted; every download is recorded like one through the API."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import StreamingResponse

from haven.errors import HavenError
from haven.services.files import files_service
from haven.web.pages.base import _render, _sub, _vault_url, router
from haven.web.session import current_caller


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = [p for p in path.split("/") if p]
    return [("/", "/")] + [(name, "/" + "/".join(parts[: i + 1])) for i, name in enumerate(parts)]


@router.get("/s/{sub}/v/{vault}/items/{vm}/points/{point}/files")
def browse_page(request: Request, sub: str, vault: str, vm: str, point: str, path: str = "/", disk: str = "", volume: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    files = files_service(core)
    listing, volumes, error = None, None, None
    try:
        volumes = files.volumes(caller, sub, vault, vm, point, disk or None)
        listing = files.list(caller, sub, vault, vm, point, path or "/", disk or None, volume or None)
    except HavenError as e:
        if volumes is None:
            raise  # no access, no such point or disk: the error page
        error = e  # a volume without a readable file system, a path not there: shown on the page
    rp = core.points.show(caller, sub, vault, vm, point)
    shown_disk = (listing or {}).get("disk") or (volumes or {}).get("disk")
    shown_volume = (listing or {}).get("volume") or volume
    here = f"{_vault_url(subscription['name'], v['name'])}/items/{quote(vm, safe='')}/points/{quote(point, safe='')}"

    def link(target: str, to: str = "files") -> str:
        return f"{here}/{to}?" + urlencode({"path": target, "disk": shown_disk or "", "volume": shown_volume or ""})

    return _render(request, "files.html", caller, status=error.http_status if error and not listing else 200, sub=subscription,
                   vault=v, vm=vm, point=rp, volumes=volumes, listing=listing, error=error, path=(listing or {}).get("path", path),
                   crumbs=_crumbs((listing or {}).get("path", path)), link=link, disk=shown_disk, volume=shown_volume,
                   base=_vault_url(subscription["name"], v["name"]))


@router.get("/s/{sub}/v/{vault}/items/{vm}/points/{point}/download")
def browse_download(request: Request, sub: str, vault: str, vm: str, point: str, path: str = "/", disk: str = "", volume: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    d = files_service(core).download(caller, sub, vault, vm, point, path, disk or None, volume or None)
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(d.name, safe='')}"}
    if d.kind == "folder":
        return StreamingResponse(d.body, media_type="application/x-tar", headers=headers)
    headers["Content-Length"] = str(d.size)
    return StreamingResponse(d.body, media_type="application/octet-stream", headers=headers)


@router.get("/s/{sub}/v/{vault}/items/{vm}/find")
def find_page(request: Request, sub: str, vault: str, vm: str, name: str = "", all: str = ""):
    core = request.app.state.core
    caller = current_caller(request)
    subscription = _sub(core, caller, sub)
    v = core.vaults.show(caller, sub, vault)
    found, error = None, None
    if name.strip():
        try:
            found = files_service(core).find(caller, sub, vault, vm, name.strip(), all_points=bool(all))
        except HavenError as e:
            error = e
    base = _vault_url(subscription["name"], v["name"])
    return _render(request, "files_find.html", caller, status=error.http_status if error else 200, sub=subscription, vault=v,
                   vm=vm, pattern=name, all=bool(all), found=found, error=error, base=base,
                   item_url=f"{base}/items/{quote(vm, safe='')}")

"""API routes of file recovery straight from the vault: a point's volumes, folder listings, downloads
(a file with HTTP Range, a folder as a tar stream) and find across points; the download audit."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from haven.api.deps import caller, core
from haven.api.paging import PAGED, Cursor, Limit, paged
from haven.api.routes.params import Id, Sub, VaultName, VmName
from haven.services.files import RangeNotSatisfiable, files_service

router = APIRouter(prefix="/subscriptions/{subscription}/vaults/{vault}", tags=["files"])
POINT = "/items/{vm}/recovery-points/{point}"

PathQ = Annotated[str, Query(min_length=1, max_length=4096, description="Absolute path inside the volume, e.g. /etc/nginx.")]
DiskQ = Annotated[str | None, Query(min_length=1, max_length=64, description="The disk (default: the point's first disk), e.g. vda.")]
VolumeQ = Annotated[str | None, Query(min_length=1, max_length=200,
                                      description="The volume: 'disk', 'p1'… or 'VG/LV' (default: the disk's only readable file system).")]


class VolumeOut(BaseModel):
    id: str
    kind: str
    offset: int | None
    size: int
    filesystem: str | None
    label: str | None
    encrypted: bool = False


class VolumesOut(BaseModel):
    vm: str
    recovery_point: str
    disk: str
    size: int
    volumes: list[VolumeOut]


class EntryOut(BaseModel):
    name: str
    path: str
    type: str
    size: int
    mode: int
    uid: int | None
    gid: int | None
    mtime: datetime | None
    target: str | None


class ListingOut(BaseModel):
    vm: str
    recovery_point: str
    disk: str
    volume: str
    filesystem: str
    path: str
    entries: list[EntryOut]


class MatchOut(BaseModel):
    recovery_point: str
    time: datetime
    disk: str
    volume: str
    path: str
    size: int
    mtime: datetime | None
    sha256: str


class FindOut(BaseModel):
    vm: str
    pattern: str
    searched_points: list[str]
    matches: list[MatchOut]


class DownloadAuditOut(BaseModel):
    id: str
    vm: str
    recovery_point: str
    disk: str
    volume: str
    path: str
    kind: str
    range: str | None
    principal: str
    principal_id: str
    status: str
    bytes: int
    started_at: datetime
    finished_at: datetime | None


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None) -> tuple[int | None, int | None] | None:
    """One 'bytes=a-b' range (a or b may be left out); anything else is ignored, as RFC 9110 allows."""
    if not header or len(header) > 100:
        return None
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(2)) if m.group(2) else None
    if first is not None and last is not None and last < first:
        return None
    return first, last


@router.get(POINT + "/volumes", response_model=VolumesOut)
def volumes(subscription: Sub, vault: VaultName, vm: VmName, point: Id, disk: DiskQ = None, app=Depends(core), who=Depends(caller)):
    """The volumes of one disk of a recovery point (whole disk, MBR/GPT partitions, LVM2 logical volumes) and their file systems."""
    return files_service(app).volumes(who, subscription, vault, vm, point, disk)


@router.get(POINT + "/files", response_model=ListingOut)
def list_files(subscription: Sub, vault: VaultName, vm: VmName, point: Id, path: PathQ = "/", disk: DiskQ = None,
               volume: VolumeQ = None, app=Depends(core), who=Depends(caller)):
    """List a folder of a recovery point, read straight from the vault (name, type, size, mode, owner, mtime, symlink target). Operator."""
    return files_service(app).list(who, subscription, vault, vm, point, path, disk, volume)


@router.get(POINT + "/files/download", response_class=StreamingResponse, responses={
    200: {"description": "The file's bytes, or a folder as a tar stream (modes, owners, times, symlinks and hard links kept).",
          "content": {"application/octet-stream": {}, "application/x-tar": {}}},
    206: {"description": "The byte range asked for (files only).", "content": {"application/octet-stream": {}}},
    416: {"description": "The range lies outside the file (Content-Range: bytes */SIZE)."},
})
def download(subscription: Sub, vault: VaultName, vm: VmName, point: Id, path: PathQ, disk: DiskQ = None, volume: VolumeQ = None,
             range_header: Annotated[str | None, Header(alias="Range", max_length=100, description="One range, e.g. bytes=0-1023 (files only).")] = None,
             app=Depends(core), who=Depends(caller)):
    """Download a file (HTTP Range supported) or a folder (a tar stream) of a recovery point. Operator; every download is recorded."""
    wanted = parse_range(range_header)
    try:
        d = files_service(app).download(who, subscription, vault, vm, point, path, disk, volume, wanted,
                                        range_header[:100] if wanted else None)
    except RangeNotSatisfiable as exc:
        return JSONResponse(exc.to_payload(), status_code=416, headers={"Content-Range": f"bytes */{exc.fields['size']}"})
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(d.name, safe='')}"}
    if d.kind == "folder":
        return StreamingResponse(d.body, media_type="application/x-tar", headers=headers)
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Length"] = str(d.size)
    status = 200
    if wanted is not None:
        status = 206
        first = d.entry.size - d.size if wanted[0] is None else wanted[0]
        headers["Content-Range"] = f"bytes {first}-{first + d.size - 1}/{d.entry.size}"
    return StreamingResponse(d.body, status_code=status, media_type="application/octet-stream", headers=headers)


@router.get("/items/{vm}/files/find", response_model=FindOut)
def find(subscription: Sub, vault: VaultName, vm: VmName,
         name: Annotated[str, Query(min_length=1, max_length=255, description="A file name or shell pattern, e.g. nginx.conf or *.conf.")],
         all_points: Annotated[bool, Query(description="Search every recovery point (default: the latest only).")] = False,
         point: Annotated[str | None, Query(min_length=1, max_length=64, description="Search this recovery point only.")] = None,
         disk: DiskQ = None, path: PathQ = "/", app=Depends(core), who=Depends(caller)):
    """Which recovery points hold a file of that name, with its size, mtime and a short SHA-256 of its content. Operator."""
    return files_service(app).find(who, subscription, vault, vm, name, all_points, point, disk, path)


@router.get("/file-downloads", response_model=list[DownloadAuditOut], responses=PAGED)
def downloads(request: Request, response: Response, subscription: Sub, vault: VaultName,
              vm: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
              limit: Limit = 200, cursor: Cursor = None, app=Depends(core), who=Depends(caller)) -> list[dict[str, Any]]:
    """The vault's file-recovery downloads, newest first, ``limit`` at a time: who, point, path, bytes, status. Reader.
    X-Next-Cursor / Link (rel=next) lead to the next page."""
    return paged(request, response, files_service(app).downloads(who, subscription, vault, vm, limit, cursor))

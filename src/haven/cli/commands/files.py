"""`haven restore files ls|get|find|volumes|downloads`: file recovery straight from the vault, over the API.

Registered on the ``files`` group of ``commands.restore`` (which imports this module).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer

from haven.cli.commands.protection import _items
from haven.cli.commands.restore import RpOpt, _point, files
from haven.cli.output import err_console
from haven.cli.state import CursorOpt, LimitOpt, SubOpt, VaultOpt, VmOpt, handled, state
from haven.errors import UserError

#: a search reads every point's file systems (each bounded by the server's own deadline): longer than a plain request's 60 s
FIND_TIMEOUT = httpx.Timeout(60.0, read=1800.0)

__all__ = ["ls", "get", "find", "volumes", "downloads"]

DiskOpt = Annotated[Optional[str], typer.Option("--disk", help="The disk, e.g. vda (default: the point's first disk).")]
VolumeOpt = Annotated[Optional[str], typer.Option("--volume", help="'disk', 'p1'… or 'VG/LV' (default: the disk's only file system).")]


def _params(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


class DownloadTargetInvalid(UserError):
    code = "UserErrorDownloadTargetInvalid"
    message = "Cannot write the download to {target!r}: {reason}"
    recommendation = "Give a folder (--target-folder DIR) that exists or can be made and holds no file of the same name."


def _inside(root: Path, name: str) -> Path:
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise DownloadTargetInvalid(target=name, reason="the archive names a path outside the folder.")
    path = root.joinpath(*parts)
    real_parent = Path(os.path.realpath(path.parent))
    if real_parent != root and root not in real_parent.parents:
        raise DownloadTargetInvalid(target=name, reason="a symlink in the archive leads outside the folder.")
    return path


def unpack(archive: Path, folder: Path) -> None:
    """Unpack the server's tar into ``folder``: files, folders, symlinks (never followed) and hard
    links, with modes and times; nothing is written outside ``folder`` and nothing is overwritten."""
    root = Path(os.path.realpath(folder))
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(archive) as tar:
        for m in tar:
            path = _inside(root, m.name)
            if m.isdir():
                path.mkdir(mode=0o700, exist_ok=False)
                dirs.append((path, m))
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                target = _inside(root, m.linkname)
                if target.is_symlink() or not target.is_file():
                    raise DownloadTargetInvalid(target=m.name, reason="a hard link names no file of the archive.")
                os.link(target, path)
            elif m.isfile():
                src = tar.extractfile(m)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                os.chmod(path, m.mode & 0o777)
                os.utime(path, (m.mtime, m.mtime))
    for path, m in reversed(dirs):  # after their content, which changes a folder's mtime
        os.chmod(path, m.mode & 0o777)
        os.utime(path, (m.mtime, m.mtime))


@files.command("volumes")
@handled
def volumes(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt, disk: DiskOpt = None):
    """The volumes (whole disk, partitions, LVM2 logical volumes) of a recovery point's disk and their file systems."""
    st = state(ctx)
    out = st.client.get(_point(subscription, vault_name, vm, rp_name) + "/volumes", disk=disk)
    st.show(out if st.output == "json" else out["volumes"], None if st.output == "json" else ["id", "kind", "filesystem", "size", "label"])


@files.command("ls")
@handled
def ls(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt, disk: DiskOpt = None,
       volume: VolumeOpt = None, path: Annotated[str, typer.Option("--path", help="The folder, e.g. /etc.")] = "/"):
    """List a folder of a recovery point, read straight from the vault: name, type, size, mode, owner, mtime, symlink target."""
    st = state(ctx)
    out = st.client.request("GET", _point(subscription, vault_name, vm, rp_name) + "/files", params=_params(path=path, disk=disk, volume=volume))
    if st.output == "json":
        st.show(out)
        return
    rows = [{**e, "mode": oct(e["mode"])[2:].rjust(4, "0"), "owner": f"{e['uid']}:{e['gid']}" if e["uid"] is not None else "",
             "target": e["target"] or ""} for e in out["entries"]]
    st.show(rows, ["name", "type", "size", "mode", "owner", "mtime", "target"])


def _stream(st, url: str, params: dict, sink) -> tuple[int, str]:
    return st.client.download(url, params, sink)


@files.command("get")
@handled
def get(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt, rp_name: RpOpt,
        path: Annotated[str, typer.Option("--path", help="The file or folder, e.g. /etc/nginx.")],
        output: Annotated[Path, typer.Option("--target-folder", "-t", help="The folder to write into (made if missing). (-o is the output format.)")] = Path("."),
        disk: DiskOpt = None, volume: VolumeOpt = None,
        as_tar: Annotated[bool, typer.Option("--tar", help="Keep a folder as the .tar the server sends instead of unpacking it.")] = False):
    """Download a file, or a folder with its modes and times, from a recovery point into a local folder. Never overwrites."""
    st = state(ctx)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadTargetInvalid(target=str(output), reason=exc.strerror or str(exc)) from None
    name = path.rstrip("/").rsplit("/", 1)[-1] or "volume"
    partial = output / f".{name}.haven-partial"
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            total, ctype = _stream(st, _point(subscription, vault_name, vm, rp_name) + "/files/download",
                                   {"path": path, "disk": disk, "volume": volume}, fh.write)
        if ctype.startswith("application/x-tar") and not as_tar:
            if os.path.lexists(output / name):
                raise DownloadTargetInvalid(target=str(output / name), reason="it already exists.")
            unpack(partial, output)
            written = output / name
        else:
            written = output / (name + ".tar" if ctype.startswith("application/x-tar") else name)
            if os.path.lexists(written):
                raise DownloadTargetInvalid(target=str(written), reason="it already exists.")
            os.replace(partial, written)
    finally:
        partial.unlink(missing_ok=True)
    if st.output == "json":
        st.show({"path": path, "written": str(written), "bytes": total})
    else:
        err_console.print(f"{path} -> {written} ({total} bytes)")


@files.command("find")
@handled
def find(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt, vm: VmOpt,
         name: Annotated[str, typer.Option("--name", help="A file name or shell pattern, e.g. nginx.conf or '*.conf'.")],
         all_points: Annotated[bool, typer.Option("--all-points", help="Search every recovery point (default: the latest).")] = False,
         rp_name: Annotated[Optional[str], typer.Option("--rp-name", "-r", help="Search this recovery point only.")] = None,
         disk: DiskOpt = None, path: Annotated[str, typer.Option("--path", help="Search under this folder.")] = "/"):
    """Which recovery points hold a file of that name, with size, mtime and a short SHA-256: which backup still has the good version."""
    st = state(ctx)
    out = st.client.request("GET", f"{_items(subscription, vault_name)}/{vm}/files/find",
                            params=_params(name=name, all_points=str(all_points).lower(), point=rp_name, disk=disk, path=path),
                            timeout=FIND_TIMEOUT)
    if st.output == "json":
        st.show(out)
        return
    st.show(out["matches"], ["recovery_point", "time", "disk", "volume", "path", "size", "mtime", "sha256"])


@files.command("downloads")
@handled
def downloads(ctx: typer.Context, subscription: SubOpt, vault_name: VaultOpt,
              vm: Annotated[Optional[str], typer.Option("--vm", help="Only this VM's downloads.")] = None, limit: LimitOpt = None, cursor: CursorOpt = None):
    """Who downloaded which file of which recovery point, newest first."""
    state(ctx).show_list(f"/subscriptions/{subscription}/vaults/{vault_name}/file-downloads",
                         ["started_at", "principal", "vm", "recovery_point", "path", "kind", "bytes", "status"], limit, cursor, vm=vm)

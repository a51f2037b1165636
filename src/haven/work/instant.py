"""Instant restore on the host: a new libvirt VM started in seconds on qcow2 overlays whose backing
files are a recovery point's disks, served read-only from the vault by nbdkit (``instant_nbd``).

``start_instant`` starts one nbdkit per VM on a Unix socket in a short folder only root and QEMU's
user can enter (each disk is an export named after it), makes one overlay per disk in the VM's
folder, and defines and starts the VM from the point's definition, cleaned like restore-vm's (new
UUID, MACs, name, console files). The vault's keys reach nbdkit in a file only root can read, in a
private folder, which the plugin removes once read; never on a command line. The session is recorded
as ``SESSIONS/NAME.json``.

``commit_instant`` streams every backing file into its overlay while the VM runs (libvirt
``blockPull``, QEMU ``block-stream``), then drops the backing chain from the VM's definition and
stops nbdkit. ``discard_instant`` stops and undefines the VM, stops nbdkit and removes every file.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from haven.hypervisor.definitions import domain_xml_for_point
from haven.hypervisor.errors import VmNotFound
from haven.work.instant_errors import (
    InstantCommitFailed,
    InstantServerFailed,
    InstantToolMissing,
)
from haven.work.protocols import JobWork

__all__ = ["nbdkit_problem", "start_instant", "commit_instant", "discard_instant", "load_session", "session_path",
           "server_alive", "PLUGIN", "COMMIT"]

PLUGIN = Path(__file__).with_name("instant_nbd.py")
COMMIT = "Move disk {disk} to local storage"
_SERVER_START_SECONDS = 60


def nbdkit_problem() -> str | None:
    """What is missing for instant restore on this host (None: nbdkit and its Python plugin load)."""
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        return "nbdkit is not installed"
    try:
        ok = subprocess.run([nbdkit, "python", "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return None if ok else "its Python plugin (package nbdkit-plugin-python) does not load"


def session_path(sessions: Path, name: str) -> Path:
    return sessions / f"{name}.json"


def load_session(sessions: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(session_path(sessions, name).read_text())
    except (OSError, ValueError):
        return None


def _save(session: dict[str, Any]) -> None:
    path = Path(session["record"])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(session, indent=2))
    os.replace(tmp, path)


def _qemu_owner(uri: str) -> tuple[int, int] | None:
    """QEMU's own user under ``qemu:///system`` (it must connect to the socket), when we are root."""
    if os.geteuid() != 0 or not uri.endswith("/system"):
        return None
    try:
        user = pwd.getpwnam("libvirt-qemu")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def server_alive(pid: int | None) -> bool:
    """Is ``pid`` still our nbdkit (not a process that reused its number)?"""
    if not pid:
        return False
    try:
        return b"nbdkit" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_server(pid: int | None) -> None:
    if not server_alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(int(pid), sig)  # type: ignore[arg-type]
        except OSError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.waitpid(int(pid), os.WNOHANG)  # type: ignore[arg-type] - our child when this process started it
            except ChildProcessError:
                pass
            if not server_alive(pid):
                return
            time.sleep(0.05)


def _start_server(key_doc: dict[str, Any], sockets: Path, log: Path) -> tuple[int, Path]:
    """nbdkit serving the point's disks on ``sockets/nbd.sock``; the key file is gone when this returns."""
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise InstantToolMissing(what="nbdkit is not installed")
    sock = sockets / "nbd.sock"
    sock.unlink(missing_ok=True)  # a stale socket would pass for this server's
    private = Path(tempfile.mkdtemp(prefix="haven-ik-"))  # 0700, root's
    proc: subprocess.Popen | None = None
    try:
        keyfile = private / "keys.json"
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(key_doc, fh)
        cmd = [nbdkit, "--foreground", "--readonly", "-U", str(sock), "python", str(PLUGIN), f"keyfile={keyfile}",
               f"pythonpath={os.pathsep.join(p for p in sys.path if p)}"]
        with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log_fh:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh, start_new_session=True)
        end = time.monotonic() + _SERVER_START_SECONDS
        while not sock.exists():
            if proc.poll() is not None:
                raise InstantServerFailed(reason=f"nbdkit exited with {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
            if time.monotonic() > end:
                raise InstantServerFailed(reason=f"its socket did not appear within {_SERVER_START_SECONDS} s")
            time.sleep(0.05)
        return proc.pid, sock
    except BaseException:
        if proc is not None:
            _stop_server(proc.pid)
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _overlay(path: Path, sock: Path, disk: str, size: int, owner: tuple[int, int] | None) -> None:
    backing = f"nbd+unix:///{disk}?socket={sock}"
    res = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", backing, str(path), str(size)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise InstantServerFailed(reason=f"qemu-img create {path} failed: {res.stderr.strip()[-500:]}")
    if owner is not None:
        os.chown(path, *owner)


def _with_backing(domain_xml: str, sock: Path, overlays: dict[str, str]) -> str:
    """Each overlay's backing store named in the definition: the point's disk on nbdkit's socket."""
    xml = ET.fromstring(domain_xml)
    by_path = {os.path.abspath(p): name for name, p in overlays.items()}
    for disk in xml.findall("./devices/disk"):
        src = disk.find("source")
        name = by_path.get(os.path.abspath(src.get("file", ""))) if src is not None else None
        if name is None:
            continue
        for old in disk.findall("backingStore"):
            disk.remove(old)
        bs = ET.Element("backingStore", type="network")
        ET.SubElement(bs, "format", type="raw")
        nbd = ET.SubElement(bs, "source", protocol="nbd", name=name)
        ET.SubElement(nbd, "host", transport="unix", socket=str(sock))
        ET.SubElement(bs, "backingStore")
        disk.insert(list(disk).index(src) + 1, bs)
    return ET.tostring(xml, encoding="unicode")


def start_instant(adapter: Any, name: str, meta: dict[str, Any], point_id: str, disks: dict[str, int], folder: Path,
                  sessions: Path, key_doc: dict[str, Any], record: dict[str, Any], ctx: JobWork) -> dict[str, Any]:
    """Serve the point, make the overlays, define and start VM ``name``; returns the session record.

    ``disks``: disk name -> size. ``record``: what the server keeps with the session (subscription,
    vault, point…). On failure nothing is left: no VM, no server, no file."""
    libvirt = _libvirt()
    owner = _qemu_owner(adapter.uri)
    sessions.mkdir(parents=True, exist_ok=True)
    os.chmod(sessions, 0o700)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o711)  # a second instant restore of the same name never shares files
    os.chmod(folder, 0o711)  # nosec B103 - traverse only (no read, no list): QEMU's user opens its overlays by name
    sockets = Path(tempfile.mkdtemp(prefix="haven-ir-"))
    os.chmod(sockets, 0o711)  # nosec B103 - QEMU's user reaches the socket (which it owns), lists nothing
    session: dict[str, Any] = {**record, "name": name, "uri": adapter.uri, "folder": str(folder), "sockets": str(sockets),
                               "record": str(session_path(sessions, name)), "log": str(folder / "nbdkit.log"),
                               "pid": None, "state": "starting", "disks": {}}
    dom = None
    try:
        ctx.subtask("Serve the recovery point", percent=0)
        pid, sock = _start_server(key_doc, sockets, Path(session["log"]))
        session["pid"] = pid
        if owner is not None:
            os.chown(sock, *owner)
        _save(session)
        ctx.subtask("Serve the recovery point", "Completed", 100)
        ctx.subtask("Start VM", percent=0)
        overlays = {d: str(folder / f"{d}.qcow2") for d in disks}
        for d, size in disks.items():
            _overlay(Path(overlays[d]), sock, d, size, owner)
        session["disks"] = overlays
        xml = _with_backing(domain_xml_for_point(name, meta, overlays, point_id, files_dir=folder), sock, overlays)
        try:
            dom = adapter.conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise InstantServerFailed(reason=f"libvirt refused the definition: {exc}") from exc
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise InstantServerFailed(reason=f"the VM did not start: {exc}") from exc
        session["state"] = "running"
        _save(session)
        ctx.subtask("Start VM", "Completed", 100)
    except BaseException:
        _remove_vm(adapter, name, dom)
        _stop_server(session.get("pid"))
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)
        Path(session["record"]).unlink(missing_ok=True)
        raise
    return session


def commit_instant(adapter: Any, session: dict[str, Any], ctx: JobWork, poll: float = 0.2) -> dict[str, Any]:
    """Stream every backing file into its overlay while the VM runs, then stop depending on the vault."""
    libvirt = _libvirt()
    name = session["name"]
    dom = adapter._dom(name)
    targets = _overlay_targets(dom, session["disks"])
    for disk, target in targets.items():
        shown = COMMIT.format(disk=disk)
        ctx.subtask(shown, percent=0)
        try:
            if _has_network_backing(dom, target):
                dom.blockPull(target, 0, 0)
                while True:
                    info = dom.blockJobInfo(target, 0)
                    if not info:
                        break
                    if info.get("end"):
                        ctx.subtask(shown, percent=round(100.0 * info["cur"] / info["end"], 1))
                    if ctx.cancel.is_set():
                        dom.blockJobAbort(target, 0)
                        ctx.check_cancelled()
                    time.sleep(poll)
            if _has_network_backing(dom, target):
                raise InstantCommitFailed(name=name, disk=disk, reason="the block job ended but the disk still reads from the vault",
                                          subscription=session.get("subscription", "?"))
        except libvirt.libvirtError as exc:
            raise InstantCommitFailed(name=name, disk=disk, reason=str(exc), subscription=session.get("subscription", "?")) from exc
        ctx.subtask(shown, "Completed", 100)
    _drop_backing_from_definition(adapter, dom)
    _stop_server(session.get("pid"))
    shutil.rmtree(session["sockets"], ignore_errors=True)
    session.update(state="committed", pid=None)
    _save(session)
    return session


def discard_instant(adapter: Any, session: dict[str, Any]) -> list[str]:
    """Stop and undefine the VM, stop nbdkit, remove the overlays, the sockets and the record; returns what went."""
    removed = []
    if _remove_vm(adapter, session["name"], None):
        removed.append(f"VM {session['name']}")
    if server_alive(session.get("pid")):
        _stop_server(session.get("pid"))
        removed.append(f"nbdkit (pid {session['pid']})")
    for key in ("folder", "sockets"):
        if session.get(key) and os.path.lexists(session[key]):
            shutil.rmtree(session[key], ignore_errors=True)
            removed.append(session[key])
    Path(session["record"]).unlink(missing_ok=True)
    return removed


# ---- libvirt ----


def _libvirt():
    from haven.hypervisor.libvirt_agent import libvirt_module

    return libvirt_module()


def _remove_vm(adapter: Any, name: str, dom: Any) -> bool:
    libvirt = _libvirt()
    if dom is None:
        try:
            dom = adapter._dom(name)
        except VmNotFound:
            return False
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    flags = (getattr(libvirt, "VIR_DOMAIN_UNDEFINE_NVRAM", 0) | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
             | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA", 0))
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError:
        return False
    return True


def _overlay_targets(dom: Any, overlays: dict[str, str]) -> dict[str, str]:
    """Disk name -> the VM's target dev of its overlay."""
    xml = ET.fromstring(dom.XMLDesc(0))
    by_path = {os.path.abspath(p): n for n, p in overlays.items()}
    out = {}
    for disk in xml.findall("./devices/disk"):
        src, target = disk.find("source"), disk.find("target")
        if src is not None and target is not None and os.path.abspath(src.get("file", "")) in by_path:
            out[by_path[os.path.abspath(src.get("file", ""))]] = target.get("dev")
    return out


def _network_backed(disk: ET.Element) -> bool:
    return any(bs.get("type") == "network" for bs in disk.iter("backingStore"))


def _has_network_backing(dom: Any, target: str) -> bool:
    xml = ET.fromstring(dom.XMLDesc(0))
    for disk in xml.findall("./devices/disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return _network_backed(disk)
    return False


def _drop_backing_from_definition(adapter: Any, dom: Any) -> None:
    """The VM's persistent definition without the backing stores it no longer has (its next start)."""
    libvirt = _libvirt()
    xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
    changed = False
    for disk in xml.findall("./devices/disk"):
        for bs in disk.findall("backingStore"):
            if _network_backed(disk):
                disk.remove(bs)
                changed = True
    if changed:
        adapter.conn.defineXML(ET.tostring(xml, encoding="unicode"))

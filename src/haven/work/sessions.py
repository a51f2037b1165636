"""File recovery on the host: a recovery point's disks served read-only over NBD (``qemu-nbd``) for a
bounded time, one session per job.

A session restores the disks into a private scratch folder, serves each over a Unix socket in a
short private folder (socket paths are limited to 107 bytes), and records itself as
``SESSIONS/ID.json``. A ``timeout`` ends the servers when the time is up, and the shell that runs
them removes the scratch files after them; ``close_session`` ends a session early.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from haven.work.errors import FileRecoveryToolMissing
from haven.work.plans import FileRecoveryPlan
from haven.work.protocols import JobWork, Repository
from haven.work.restore import restore_disks_into

__all__ = ["open_session", "close_session", "session_alive", "list_sessions"]


def open_session(plan: FileRecoveryPlan, repo: Repository, ctx: JobWork, now: Callable[[], datetime]) -> dict[str, Any]:
    """Serve the plan's disks; returns the session's record (its exports, its expiry). On failure nothing is left."""
    qemu_nbd, timeout_bin = shutil.which("qemu-nbd"), shutil.which("timeout")
    if qemu_nbd is None:
        raise FileRecoveryToolMissing(tool="qemu-nbd (package qemu-utils)")
    if timeout_bin is None:
        raise FileRecoveryToolMissing(tool="timeout (package coreutils)")
    sessions = Path(plan.sessions)
    session_id = plan.session_id
    scratch = sessions / session_id
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o700)
    record_path = sessions / f"{session_id}.json"
    proc: subprocess.Popen | None = None
    sockets: Path | None = None
    try:
        manifest = repo.load_point(plan.item_id, plan.point_id)
        sizes = {d.name: d.size for d in manifest.disks}
        serve = [n for n in plan.disks if sizes.get(n, 0) > 0]
        for n in plan.disks:
            if sizes.get(n, 0) == 0:
                ctx.warn(f"Disk {n} is empty (0 bytes): there is nothing to export.")
        files = restore_disks_into(repo, plan.item_id, plan.point_id, serve, scratch, "raw", ctx,
                                   step="Prepare disk {name} for file recovery")
        seconds = plan.seconds
        exports, cmds = [], []
        sockets = Path(tempfile.mkdtemp(prefix="haven-fr-"))
        for n in serve:
            sock = sockets / f"{n}.sock"
            cmd = [timeout_bin, "--foreground", "-s", "TERM", str(seconds), qemu_nbd, "--read-only", "--persistent", "--shared=0",
                   "--format=raw", f"--export-name={n}", f"--socket={sock}", files[n]]
            cmds.append(" ".join(shlex.quote(c) for c in cmd) + " &")
            exports.append({"disk": n, "size": sizes[n], "socket": str(sock), "export_name": n,
                            "uri": f"nbd+unix:///{n}?socket={sock}"})
        cleanup = " ".join(shlex.quote(str(x)) for x in (scratch, sockets, record_path, sessions / f"{session_id}.log"))
        script = "\n".join(cmds + ["wait", f"rm -rf {cleanup}"])
        log_path = sessions / f"{session_id}.log"
        with open(log_path, "ab") as log_fh:
            proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=log_fh, start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end and not all(Path(e["socket"]).exists() for e in exports):
            if proc.poll() is not None:
                raise FileRecoveryToolMissing(tool="a working qemu-nbd", message=f"qemu-nbd exited: {log_path.read_text()[-500:]}")
            time.sleep(0.05)
        expires = now() + timedelta(seconds=seconds)
        session = {"session_id": session_id, "pid": proc.pid, "item_id": plan.item_id, "point_id": plan.point_id, "vm": plan.vm,
                   "scratch": str(scratch), "sockets": str(sockets), "record": str(record_path), "log": str(log_path),
                   "expires_at": expires.isoformat(), "exports": exports}
        record_path.write_text(json.dumps(session, indent=2))
    except BaseException:
        close_session({"pid": proc.pid if proc is not None else None, "scratch": str(scratch),
                       "sockets": str(sockets) if sockets else None, "record": str(record_path)})
        raise
    return session


def list_sessions(folder: Path) -> list[dict[str, Any]]:
    """The session records in ``folder`` (open or not: see ``session_alive``)."""
    out = []
    if folder.is_dir():
        for f in sorted(folder.glob("*.json")):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
    return out


def session_alive(session: dict[str, Any]) -> bool:
    pid = session.get("pid")
    if not pid:
        return False
    try:
        os.killpg(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def close_session(session: dict[str, Any]) -> None:
    """Stop a file-recovery session's NBD servers and remove its scratch files."""
    pid = session.get("pid")
    if pid:
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        end = time.monotonic() + 5
        while time.monotonic() < end and session_alive(session):
            time.sleep(0.05)
        if session_alive(session):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except OSError:
                pass
    for key in ("scratch", "sockets"):
        if session.get(key):
            shutil.rmtree(session[key], ignore_errors=True)
    for key in ("record", "log"):
        if session.get(key):
            Path(session[key]).unlink(missing_ok=True)

"""Helpers shared by the service fixtures: free ports, waiting, processes, and the CI rule.

The rule: in CI (``CI=true``) a test whose service is missing *fails*; on a developer's machine
it is skipped with the reason. ``require`` applies it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Fail (in CI) or skip (elsewhere) unless ``ok``."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {what}", pytrace=False)
    pytest.skip(f"service missing: {what}")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"binary {name!r} not on PATH (run scripts/setup-system.sh)")
    return path  # type: ignore[return-value]


def require_module(name: str) -> None:
    """The Python module must import (Debian's python3-nbd, libvirt-python from the project's set-up)."""
    import importlib.util

    require(importlib.util.find_spec(name) is not None, f"Python module {name!r} missing (run scripts/setup-python.sh)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_for_path(path: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear after {timeout}s")


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server in its own process group, output to ``log``."""
    fh = open(log, "ab")
    return subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        cwd=cwd, start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started by ``start`` and everything it spawned."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout)

"""A real ``haven serve`` process on a free port, with its own home folder and database."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx

from tests.services._util import free_port, start, stop

__all__ = ["HavenServer"]


class HavenServer:
    def __init__(self, home: Path, database_url: str | None = None, env: dict[str, str] | None = None,
                 module: str = "haven.cli.main"):
        self.home, self.port, self.module = home, free_port(), module
        self.url = f"http://127.0.0.1:{self.port}"
        # the VM folder only, unless a test asks for more: a libvirtd running on the machine adds no host of its own
        self.env = {"HAVEN_HOME": str(home), "HAVEN_HYPERVISORS": f"folder://{home / 'vms'}",
                    **({"HAVEN_DATABASE_URL": database_url} if database_url else {}), **(env or {})}
        self.proc = None

    def start(self, timeout: float = 60.0) -> "HavenServer":
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", self.module, "serve", "--home", str(self.home), "--port", str(self.port)]
        self.proc = start(cmd, self.home / "server.log", env=self.env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haven serve exited: {(self.home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError((self.home / "server.log").read_text()[-3000:])

    @property
    def token(self) -> str:
        return json.loads((self.home / "credentials.json").read_text())["token"]

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "HAVEN_HOME": str(self.home), "HAVEN_SERVER": self.url}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def run_cli(server: HavenServer, *args: str, token: str | None = None, expect: int = 0):
    """``haven -o json ARGS`` against ``server`` (in this process, as the Owner unless ``token``); its JSON
    answer when it exits 0 as expected, else the CLI result (output, exit code) to look at."""
    from typer.testing import CliRunner

    from haven.cli.main import app

    result = CliRunner().invoke(app, ["--server", server.url, "--token", token or server.token, "-o", "json", *args])
    assert result.exit_code == expect, (args, result.exit_code, result.output)
    out = result.stdout.strip()
    return json.loads(out) if out and expect == 0 else result

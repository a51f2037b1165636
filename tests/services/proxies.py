"""Real HTTP proxies from Debian as pytest fixtures: tinyproxy and squid, with and without basic auth.

Each fixture yields a :class:`Proxy` (host, port, user, password). Squid answers missing or wrong
credentials with a real 407; tinyproxy answers wrong credentials with 401 (and CONNECT too).
Both tunnel HTTPS by CONNECT to any port (no ``ConnectPort`` / ``SSL_ports`` restriction).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._util import free_port, require, require_binary, start, stop, wait_for_port

USER, PASSWORD = "haven", "s3cret-proxy"
NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth"


@dataclass
class Proxy:
    kind: str
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"http://{self.user}:{self.password}@{self.host}:{self.port}" if self.user else self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def logs(self) -> str:
        out = []
        for f in sorted(self.log.parent.glob("*.log")) if self.log else []:
            out.append(f.read_text(errors="replace"))
        return "\n".join(out)


def start_tinyproxy(folder: Path, auth: bool = False) -> Proxy:
    binary = require_binary("tinyproxy")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "tinyproxy.conf"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", "Allow 127.0.0.1", "LogLevel Info",
             "MaxClients 50", "DisableViaHeader Yes"]
    if auth:
        lines.append(f"BasicAuth {USER} {PASSWORD}")
    conf.write_text("\n".join(lines) + "\n")
    log = folder / "tinyproxy.log"
    proc = start([binary, "-d", "-c", str(conf)], log)
    wait_for_port(port, proc=proc, timeout=15)
    return Proxy("tinyproxy", "127.0.0.1", port, USER if auth else None, PASSWORD if auth else None, proc, log)


def start_squid(folder: Path, auth: bool = False) -> Proxy:
    binary = shutil.which("squid") or ("/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else None)
    require(binary is not None, "binary 'squid' (run scripts/setup-system.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"http_port 127.0.0.1:{port}",
        f"pid_filename {folder}/squid.pid",
        f"cache_log {folder}/cache.log",
        f"access_log stdio:{folder}/access.log",
        "cache deny all",
        "cache_mem 8 MB",
        f"coredump_dir {folder}",
        "shutdown_lifetime 0 seconds",
        "visible_hostname haven-test",
        "forwarded_for delete",
        "acl local src 127.0.0.1/32",
    ]
    if auth:
        require(os.path.exists(NCSA_AUTH), f"{NCSA_AUTH} (squid's basic_ncsa_auth)")
        hashed = subprocess.run(["openssl", "passwd", "-apr1", PASSWORD], check=True, capture_output=True, text=True).stdout.strip()
        (folder / "passwd").write_text(f"{USER}:{hashed}\n")
        lines += [f"auth_param basic program {NCSA_AUTH} {folder}/passwd", "auth_param basic realm haven-test",
                  "acl authed proxy_auth REQUIRED", "http_access allow local authed"]
    else:
        lines += ["http_access allow local"]
    lines += ["http_access deny all"]
    conf = folder / "squid.conf"
    conf.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:  # squid drops to user 'proxy': its folder must be writable by it
        try:
            for f in [folder, *folder.iterdir()]:
                shutil.chown(f, "proxy", "proxy")
        except (LookupError, PermissionError):
            pass
    log = folder / "squid-stdout.log"
    proc = start([binary, "-N", "-f", str(conf)], log)
    try:
        wait_for_port(port, proc=proc, timeout=30)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        raise RuntimeError(f"squid did not start: {exc}\n{log.read_text(errors='replace')[-3000:]}"
                           f"\n{(folder / 'cache.log').read_text(errors='replace')[-3000:] if (folder / 'cache.log').exists() else ''}")
    return Proxy("squid", "127.0.0.1", port, USER if auth else None, PASSWORD if auth else None, proc, log)


def _fixture(starter, auth: bool):
    def fx() -> Iterator[Proxy]:
        # not under pytest's 0700 temp root: squid runs as user 'proxy' and must reach its folder
        folder = Path(tempfile.mkdtemp(prefix=f"haven-{starter.__name__}-"))
        os.chmod(folder, 0o755)
        proxy = starter(folder / "p", auth=auth)
        try:
            yield proxy
        finally:
            proxy.stop()
            shutil.rmtree(folder, ignore_errors=True)

    return fx


tinyproxy = pytest.fixture(scope="session", name="tinyproxy")(_fixture(start_tinyproxy, False))
tinyproxy_auth = pytest.fixture(scope="session", name="tinyproxy_auth")(_fixture(start_tinyproxy, True))
squid = pytest.fixture(scope="session", name="squid")(_fixture(start_squid, False))
squid_auth = pytest.fixture(scope="session", name="squid_auth")(_fixture(start_squid, True))

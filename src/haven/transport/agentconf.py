"""The host agent's network configuration: ``$HAVEN_HOME/agent.conf`` and the proxy variables.

Configuration, in the order it is looked up (the first that names a proxy wins):

1. ``$HAVEN_HOME/agent.conf`` in waagent.conf style (``Key=Value``, ``#`` comments)::

       HttpProxy.Host=10.0.0.5
       HttpProxy.Port=3128
       HttpProxy.User=backup            # optional: basic authentication
       HttpProxy.Password=secret        # optional
       HttpProxy.NoProxy=localhost,.internal   # optional: hosts reached directly
       Storage.CABundle=/etc/haven/ca.pem       # optional: trust this CA for HTTPS endpoints
       Storage.Timeout=30                       # optional: seconds before an endpoint counts as not answering

   The same file may also hold the ``/etc/environment`` lines ``http_proxy=…``, ``https_proxy=…``
   and ``no_proxy=…``.
2. The agent process's environment: ``https_proxy``/``HTTPS_PROXY``, ``http_proxy``/``HTTP_PROXY``,
   ``no_proxy``/``NO_PROXY``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from haven.config import default_home
from haven.transport.errors import AgentConfigInvalid, ProxyHostInvalid

__all__ = ["AgentNetworkConfig", "load_agent_config", "write_agent_config", "agent_config_path", "show_agent_proxy",
           "set_agent_proxy", "CONFIG_FILE", "DEFAULT_TIMEOUT"]

CONFIG_FILE = "agent.conf"
DEFAULT_TIMEOUT = 60.0  # the engine's backends' own default


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
#: the /etc/environment-style proxy lines: they would keep a proxy after the user asked to go direct
_ENV_PROXY_KEYS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def agent_config_path(home: Path) -> Path:
    return Path(home) / CONFIG_FILE


@dataclass(frozen=True)
class AgentNetworkConfig:
    proxy_host: str | None = None
    proxy_port: int | None = None
    proxy_user: str | None = None
    proxy_password: str | None = None
    http_proxy: str | None = None  # a full URL from http_proxy=
    https_proxy: str | None = None  # a full URL from https_proxy=
    no_proxy: tuple[str, ...] = ()
    ca_bundle: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    source: str = "none"  # where the proxy setting came from, for messages

    def _with_auth(self, url: str) -> str:
        p = urlparse(url if "://" in url else f"http://{url}")
        if self.proxy_user and not p.username:
            cred = quote(self.proxy_user, safe="") + (":" + quote(self.proxy_password or "", safe=""))
            return f"{p.scheme}://{cred}@{p.hostname}:{p.port or 3128}"
        return f"{p.scheme}://{p.netloc}"

    def proxy_for(self, scheme: str, host: str) -> str | None:
        """The proxy URL (with credentials) for a request to ``scheme://host``, or None to go direct."""
        if _bypassed(host, self.no_proxy):
            return None
        if self.proxy_host:
            return self._with_auth(f"http://{_bracket(self.proxy_host)}:{self.proxy_port or 3128}")
        url = self.https_proxy if scheme == "https" else self.http_proxy
        url = url or self.http_proxy or self.https_proxy
        return self._with_auth(url) if url else None

    @property
    def has_proxy(self) -> bool:
        return bool(self.proxy_host or self.http_proxy or self.https_proxy)

    def describe(self) -> dict[str, Any]:
        """What is configured, without secrets."""
        return {
            "proxy": _redact(self.proxy_for("https", "example.invalid")) if self.has_proxy else None,
            "proxy_source": self.source,
            "proxy_auth": bool(self.proxy_user) or "@" in (self.http_proxy or "") + (self.https_proxy or ""),
            "no_proxy": list(self.no_proxy),
            "ca_bundle": self.ca_bundle,
            "timeout": self.timeout,
        }


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _redact(url: str | None) -> str | None:
    if not url:
        return url
    p = urlparse(url)
    if p.password is not None:
        return url.replace(f":{p.password}@", ":***@", 1)
    return url


def _bypassed(host: str, no_proxy: tuple[str, ...]) -> bool:
    host = (host or "").lower().strip("[]")
    for entry in no_proxy:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:
            if "/" in entry and ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            pass
        bare = entry.lstrip(".")
        if host == bare or host.endswith("." + bare):
            return True
    return False


def _parse_conf(text: str, path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise AgentConfigInvalid(config=str(path), reason=f"line {n} is not Key=Value: {line[:60]!r}")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_agent_config(home: Path | None = None, env: dict[str, str] | None = None) -> AgentNetworkConfig:
    """Read ``$HAVEN_HOME/agent.conf`` and the proxy variables of ``env`` (default: ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    path = agent_config_path(home) if home is not None else None
    conf: dict[str, str] = {}
    if path is not None and path.exists():
        conf = _parse_conf(path.read_text(), path)
    where = str(path) if path else "the agent configuration"

    def pick(*keys: str, source: dict[str, str]) -> str | None:
        for k in keys:
            if source.get(k):
                return source[k]
        return None

    port: int | None = None
    if conf.get("HttpProxy.Port"):
        try:
            port = int(conf["HttpProxy.Port"])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise AgentConfigInvalid(config=where, reason=f"HttpProxy.Port={conf['HttpProxy.Port']!r} is not a port number") from None
    host = conf.get("HttpProxy.Host") or None
    if port and not host:
        raise AgentConfigInvalid(config=where, reason="HttpProxy.Port is set but HttpProxy.Host is not")
    http_proxy = pick("http_proxy", "HTTP_PROXY", source=conf)
    https_proxy = pick("https_proxy", "HTTPS_PROXY", source=conf)
    source = f"{where} (HttpProxy.Host)" if host else (f"{where} (http_proxy/https_proxy)" if http_proxy or https_proxy else "none")
    if not (host or http_proxy or https_proxy):
        http_proxy = pick("http_proxy", "HTTP_PROXY", source=env)
        https_proxy = pick("https_proxy", "HTTPS_PROXY", source=env)
        if http_proxy or https_proxy:
            source = "environment (http_proxy/https_proxy)"
    no_proxy_raw = conf.get("HttpProxy.NoProxy") or pick("no_proxy", "NO_PROXY", source=conf) or pick("no_proxy", "NO_PROXY", source=env) or ""
    try:
        timeout = float(conf.get("Storage.Timeout") or DEFAULT_TIMEOUT)
    except ValueError:
        raise AgentConfigInvalid(config=where, reason=f"Storage.Timeout={conf['Storage.Timeout']!r} is not a number") from None
    return AgentNetworkConfig(
        proxy_host=host, proxy_port=port if host else None,
        proxy_user=conf.get("HttpProxy.User") or None, proxy_password=conf.get("HttpProxy.Password") or None,
        http_proxy=http_proxy, https_proxy=https_proxy,
        no_proxy=tuple(x.strip() for x in no_proxy_raw.split(",") if x.strip()),
        ca_bundle=conf.get("Storage.CABundle") or None, timeout=timeout, source=source,
    )


def write_agent_config(home: Path, *, host: str | None, port: int | None, user: str | None = None,
                       password: str | None = None, no_proxy: str | None = None, ca_bundle: str | None = None,
                       timeout: float | None = None) -> Path:
    """Write the proxy keys into ``$HAVEN_HOME/agent.conf`` (other lines are kept); mode 0600 (it may hold a password).

    With no ``host`` (direct), the file's ``http_proxy=`` / ``https_proxy=`` lines go too, so direct means direct.
    """
    if host is not None and not _valid_host(host):
        raise ProxyHostInvalid(host=host)
    path = agent_config_path(home)
    managed = {"HttpProxy.Host": host, "HttpProxy.Port": str(port) if port else None, "HttpProxy.User": user,
               "HttpProxy.Password": password, "HttpProxy.NoProxy": no_proxy, "Storage.CABundle": ca_bundle,
               "Storage.Timeout": (f"{timeout:g}" if timeout else None)}
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key not in managed and not (host is None and key in _ENV_PROXY_KEYS):
                kept.append(line)
    lines = kept + [f"{k}={v}" for k, v in managed.items() if v]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def show_agent_proxy(home: Path | None = None) -> dict[str, Any]:
    """``haven prepare proxy show``: this machine's agent configuration as the agent will use it (passwords hidden)."""
    home = Path(home) if home is not None else default_home()
    return {"config_file": str(agent_config_path(home)), **load_agent_config(home).describe()}


def set_agent_proxy(home: Path | None = None, **keys: Any) -> dict[str, Any]:
    """``haven prepare proxy set``: write the proxy keys (see :func:`write_agent_config`), answer what the agent will use."""
    home = Path(home) if home is not None else default_home()
    path = write_agent_config(home, **keys)
    return {"config_file": str(path), **load_agent_config(home).describe()}

"""The host agent's outbound path to the vaults' storage: direct, or through an HTTP(S) proxy.

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

``backend_options(url, options, config)`` turns that into the options ``open_backend`` takes for each
kind of storage URL (``proxies=`` for Azure Blob, S3 and Haven's endpoint; ``connection_verify=`` /
``verify=`` for the CA). ``open_agent_backend`` opens a backend the agent way: the engine's backend,
wrapped by :class:`ProxyAwareBackend` (typed proxy and time-out errors), wrapped by the engine's retry.
``probe_endpoint`` checks DNS, TCP, TLS and an authenticated request, directly or through the proxy.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from haven.engine.backend import Backend, WrappingBackend
from haven.engine.errors import StorageTimeout, StorageUnavailable
from haven.errors import HavenError, PreconditionFailed, Transient, UserError

__all__ = [
    "AgentNetworkConfig",
    "ProxyHostInvalid",
    "load_agent_config",
    "write_agent_config",
    "agent_config_path",
    "Endpoint",
    "endpoint_of",
    "backend_options",
    "open_agent_backend",
    "ProxyAwareBackend",
    "probe_endpoint",
    "ProxyAuthenticationRequired",
    "ProxyUnreachable",
    "StorageEndpointTimeout",
    "AgentConfigInvalid",
    "StorageEndpointNotResolved",
    "ProxyRefusedEndpoint",
    "StorageCertificateUntrusted",
    "StorageTlsFailed",
    "StorageOptionsInvalid",
]

CONFIG_FILE = "agent.conf"
DEFAULT_TIMEOUT = 60.0  # the engine's backends' own default


# ---- errors ----


class ProxyAuthenticationRequired(PreconditionFailed):
    code = "UserErrorProxyAuthenticationRequired"
    message = ("The proxy requires authentication: check the credentials in the agent configuration "
               "(proxy {proxy} answered {status} for {endpoint}).")
    recommendation = ("Set HttpProxy.User and HttpProxy.Password (or user:password@ in https_proxy) in {config} to an account "
                      "the proxy accepts, then run 'haven prepare check'.")


class ProxyUnreachable(Transient):
    code = "TransientErrorProxyUnreachable"
    message = "The proxy {proxy} did not accept a connection ({reason}), so the storage endpoint {endpoint} was not reached."
    recommendation = ("Start the proxy or fix HttpProxy.Host/HttpProxy.Port (or http_proxy/https_proxy) in {config}; "
                      "make sure the firewall lets this host reach the proxy's port.")


class StorageEndpointTimeout(Transient):
    code = "TransientErrorStorageEndpointTimeout"
    message = "The storage endpoint {endpoint} did not answer within {timeout:g} s{via} ({detail})."
    recommendation = ("Let this host reach {endpoint} (allow-list the region's ranges: 'haven prepare firewall-rules'), "
                      "or route it through a proxy (HttpProxy.Host/HttpProxy.Port in {config}); then run 'haven prepare check'.")


class StorageEndpointNotResolved(PreconditionFailed):
    code = "UserErrorStorageEndpointNotResolved"
    message = "{host} does not resolve: {reason}."
    recommendation = "Fix the name in {where} or the host's DNS resolver (/etc/resolv.conf)."


class ProxyRefusedEndpoint(PreconditionFailed):
    code = "UserErrorProxyRefusedEndpoint"
    message = "The proxy {proxy} did not pass the request on to {endpoint}: {line}."
    recommendation = ("Allow {endpoint} in the proxy's rules (squid: http_access and the SSL_ports acl for CONNECT; "
                      "tinyproxy: Filter and ConnectPort) and check the proxy's route to it.")


class StorageCertificateUntrusted(PreconditionFailed):
    code = "UserErrorStorageCertificateUntrusted"
    message = "The certificate of the storage endpoint {endpoint} is not trusted: {reason}."
    recommendation = "Add the CA that signed it as Storage.CABundle=<file> in {config}, or give the endpoint a certificate the host trusts."


class StorageTlsFailed(PreconditionFailed):
    code = "UserErrorStorageTlsFailed"
    message = "The TLS handshake with the storage endpoint {endpoint} failed: {reason}."
    recommendation = "Check that the endpoint speaks HTTPS on that port, and any TLS inspection by the proxy."


class StorageOptionsInvalid(PreconditionFailed):
    code = "UserErrorStorageOptionsInvalid"
    message = "The server's storage options for {url} are incomplete: {reason}."
    recommendation = "Configure the storage endpoint and credentials for this kind of storage URL on the server."


class AgentConfigInvalid(UserError):
    code = "UserErrorAgentConfigInvalid"
    message = "The agent configuration {config} is invalid: {reason}."
    recommendation = "Fix the line in {config} (HttpProxy.Host=<host>, HttpProxy.Port=<1-65535>, see docs/guides/agent-proxy.md)."


class ProxyHostInvalid(UserError):
    code = "UserErrorProxyHostInvalid"
    message = "The proxy host {host!r} is not a host name or an IP address."
    recommendation = ("Give the proxy's host name or IP address alone, e.g. "
                      "'haven prepare proxy set --host proxy.example.com --port 3128'; to go direct: 'haven prepare proxy set'.")


# ---- configuration ----

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


# ---- where a storage URL's traffic goes ----


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http | https
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def __str__(self) -> str:
        return f"{self.scheme}://{_bracket(self.host)}:{self.port}"


def _endpoint_from_url(url: str) -> Endpoint:
    p = urlparse(url)
    scheme = (p.scheme or "https").lower()
    return Endpoint(scheme, p.hostname or "", p.port or (443 if scheme == "https" else 80))


def _azure_endpoint(options: dict[str, Any]) -> Endpoint | None:
    if options.get("account_url"):
        return _endpoint_from_url(options["account_url"])
    cs = options.get("connection_string")
    if not cs:
        return None
    parts = dict(p.split("=", 1) for p in cs.split(";") if "=" in p)
    if parts.get("BlobEndpoint"):
        return _endpoint_from_url(parts["BlobEndpoint"])
    proto = parts.get("DefaultEndpointsProtocol", "https")
    if parts.get("AccountName"):
        return _endpoint_from_url(f"{proto}://{parts['AccountName']}.blob.{parts.get('EndpointSuffix', 'core.windows.net')}")
    return None


def endpoint_of(storage_url: str, options: dict[str, Any] | None = None) -> Endpoint | None:
    """The network endpoint a storage URL's traffic goes to; None for a local folder."""
    options = options or {}
    scheme = urlparse(storage_url).scheme.lower()
    if scheme == "file":
        return None
    if scheme == "azure":
        return _azure_endpoint(options)
    if scheme == "s3":
        if options.get("endpoint_url"):
            return _endpoint_from_url(options["endpoint_url"])
        return Endpoint("https", f"s3.{options.get('region') or 'us-east-1'}.amazonaws.com", 443)
    if scheme in ("haven+http", "haven+https"):
        return _endpoint_from_url(storage_url.split("+", 1)[1])
    return None


def backend_options(storage_url: str, options: dict[str, Any] | None, config: AgentNetworkConfig) -> dict[str, Any]:
    """``options`` plus the agent's proxy and CA for ``storage_url`` (explicit options win)."""
    opts = dict(options or {})
    scheme = urlparse(storage_url).scheme.lower()
    if scheme == "file":
        return opts
    endpoint = endpoint_of(storage_url, opts)
    proxy = config.proxy_for(endpoint.scheme, endpoint.host) if endpoint else None
    if proxy and "proxies" not in opts:
        opts["proxies"] = {"http": proxy, "https": proxy}
        if scheme in ("azure", "s3"):
            # A 407 or a dead proxy must fail fast: the SDKs' own retries (azure-storage-blob waits 15 s, then 24 s)
            # would hide it for a minute. Transient errors are still retried by the engine's RetryingBackend.
            opts.setdefault("sdk_retries", 0)
    if config.ca_bundle:
        key = "connection_verify" if scheme == "azure" else "verify"
        opts.setdefault(key, config.ca_bundle)
    if "timeout" not in opts and config.timeout != DEFAULT_TIMEOUT:
        opts["timeout"] = config.timeout
    return opts


def open_agent_backend(storage_url: str, options: dict[str, Any] | None = None, *, home: Path | None = None,
                       config: AgentNetworkConfig | None = None) -> Backend:
    """The backend the host agent uses for ``storage_url``: proxy applied, errors typed, retried."""
    from haven.engine.retry import RetryingBackend
    from haven.engine.urls import open_backend

    opts = dict(options or {})
    retry = opts.pop("retry", True)
    attempts = opts.pop("retry_attempts", 5)
    config = config or load_agent_config(home)
    opts = backend_options(storage_url, opts, config)
    inner = open_backend(storage_url, retry=False, **opts)
    wrapped = ProxyAwareBackend(inner, storage_url, opts, config, config_path=str(agent_config_path(home)) if home else "agent.conf")
    return RetryingBackend(wrapped, attempts=attempts) if retry else wrapped


# ---- the wrapper ----


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and exceptions given as arguments (requests/urllib3 nest them)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


_STATUS_407 = re.compile(r"(?<![\w./-])407(?![\w/-])")


def _proxy_auth_status(exc: BaseException) -> int | None:
    """407 (or the 401 tinyproxy answers a CONNECT with) from a proxy somewhere in the exception chain."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        status = getattr(e, "status_code", None) or getattr(response, "status_code", None)
        if isinstance(response, dict):  # botocore's ClientError
            status = status or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 407:
            return 407
        if status == 401 and _from_proxy(response):
            return 401
        text = str(e)
        # a standalone 407 (never part of a hex object name) next to the word proxy, or "HTTP 407"
        if _STATUS_407.search(text) and ("proxy" in text.lower() or "HTTP 407" in text):
            return 407
        if "Tunnel connection failed: 401" in text or ("ProxyError" in type(e).__name__ and "401" in text):
            return 401
    return None


def _from_proxy(response: Any) -> bool:
    """A 401 that a proxy (tinyproxy answers wrong credentials so) rather than the storage sent."""
    headers: Any = None
    if isinstance(response, dict):
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders")
    elif response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return False
    try:
        items = {str(k).lower(): str(v).lower() for k, v in dict(headers).items()}
    except (TypeError, ValueError):
        return False
    return "proxy-authenticate" in items or "proxy" in items.get("server", "") or "proxy" in items.get("www-authenticate", "")


def _tcp_ok(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


class ProxyAwareBackend(WrappingBackend):
    """Turns the inner backend's transport failures into errors that name the proxy or the endpoint.

    407 from the proxy → :class:`ProxyAuthenticationRequired` (permanent: retrying cannot help);
    the proxy refuses connections → :class:`ProxyUnreachable`; a time-out →
    :class:`StorageEndpointTimeout` naming the endpoint (and the proxy it went through).
    """

    def __init__(self, inner: Backend, storage_url: str, options: dict[str, Any], config: AgentNetworkConfig,
                 config_path: str = "agent.conf"):
        super().__init__(inner)
        self.storage_url = storage_url
        self.endpoint = endpoint_of(storage_url, options)
        proxies = options.get("proxies")
        proxy = None
        if isinstance(proxies, dict) and self.endpoint:
            proxy = proxies.get(self.endpoint.scheme) or proxies.get("https") or proxies.get("http")
        elif isinstance(proxies, str):
            proxy = proxies
        self.proxy = proxy
        self.timeout = float(options.get("timeout", config.timeout if config.timeout else DEFAULT_TIMEOUT))
        self.config_path = config_path

    def _proxy_hostport(self) -> tuple[str, int] | None:
        if not self.proxy:
            return None
        p = urlparse(self.proxy)
        return p.hostname or "", p.port or 3128

    def _translate(self, exc: HavenError) -> HavenError:
        endpoint = str(self.endpoint) if self.endpoint else self.location
        proxy_hp = self._proxy_hostport()
        proxy_name = f"{proxy_hp[0]}:{proxy_hp[1]}" if proxy_hp else None
        if proxy_hp:
            status = _proxy_auth_status(exc)
            if status:
                return ProxyAuthenticationRequired(proxy=proxy_name, status=status, endpoint=endpoint, config=self.config_path)
        if isinstance(exc, (StorageUnavailable, StorageTimeout)):
            if proxy_hp:
                reason = _tcp_ok(*proxy_hp, timeout=min(self.timeout, 3.0))
                if reason:
                    return ProxyUnreachable(proxy=proxy_name, reason=reason, endpoint=endpoint, config=self.config_path)
            text = " ".join(str(e) for e in _chain(exc)).lower()
            if isinstance(exc, StorageTimeout) or "timed out" in text or "timeout" in text:
                via = f" through the proxy {proxy_name}" if proxy_name else ""
                detail = exc.fields.get("detail", exc.text) if exc.fields else exc.text
                return StorageEndpointTimeout(endpoint=endpoint, timeout=self.timeout, via=via, detail=str(detail)[:300],
                                              config=self.config_path)
        return exc

    def _call(self, fn):
        try:
            return fn()
        except HavenError as exc:
            new = self._translate(exc)
            if new is exc:
                raise
            raise new from exc

    def is_permanent(self, exc: BaseException) -> bool:
        if isinstance(exc, ProxyAuthenticationRequired):
            return True
        if isinstance(exc, (ProxyUnreachable, StorageEndpointTimeout)):
            return False
        return self.inner.is_permanent(exc)


# ---- the connectivity probe (haven prepare check) ----


@dataclass
class ProbeStep:
    step: str  # dns | tcp | proxy | tls | request
    status: str  # pass | fail | skip
    reason: str
    fix: str | None = None
    code: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "reason": self.reason, "fix": self.fix, "code": self.code,
                "seconds": round(self.seconds, 3)}


@dataclass
class ProbeResult:
    storage_url: str
    endpoint: str | None
    proxy: str | None
    steps: list[ProbeStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "fail" for s in self.steps)

    @property
    def failed(self) -> ProbeStep | None:
        return next((s for s in self.steps if s.status == "fail"), None)

    def to_dict(self) -> dict[str, Any]:
        return {"storage_url": self.storage_url, "endpoint": self.endpoint, "proxy": _redact(self.proxy), "ok": self.ok,
                "steps": [s.to_dict() for s in self.steps]}


def _ssl_context(ca: str | bool | None) -> ssl.SSLContext:
    if ca is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(ca, str):
        return ssl.create_default_context(cafile=ca)
    return ssl.create_default_context()


def _read_status(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = line.split(" ", 2)
    try:
        return int(parts[1]), line
    except (IndexError, ValueError):
        return 0, line or "no answer"


def probe_endpoint(storage_url: str, options: dict[str, Any] | None, config: AgentNetworkConfig, *,
                   timeout: float = 10.0, config_path: str = "agent.conf", probe_name: str = "config") -> ProbeResult:
    """Walk the path to the vault's storage step by step, each step within ``timeout`` seconds."""
    opts = backend_options(storage_url, options, config)
    endpoint = endpoint_of(storage_url, opts)
    scheme = urlparse(storage_url).scheme.lower()
    proxies = opts.get("proxies") if isinstance(opts.get("proxies"), dict) else None
    proxy = (proxies or {}).get(endpoint.scheme) if endpoint else None
    result = ProbeResult(storage_url, str(endpoint) if endpoint else None, proxy)
    steps = result.steps

    def timed(step: str, fn):
        t0 = time.monotonic()
        s = fn()
        s.seconds = time.monotonic() - t0
        steps.append(s)
        return s

    if scheme == "file":
        path = Path(unquote(urlparse(storage_url).path))
        parent = path if path.exists() else path.parent
        ok = parent.exists() and os.access(parent, os.W_OK)
        steps.append(ProbeStep("folder", "pass" if ok else "fail",
                               f"local folder {parent} is {'writable' if ok else 'missing or not writable'}",
                               None if ok else f"Create {parent} and make it writable by the Haven service user."))
    elif endpoint is None:
        err = StorageOptionsInvalid(url=storage_url, reason="the network endpoint cannot be told from them")
        steps.append(ProbeStep("endpoint", "fail", err.text, err.fix, err.code))
        return result
    else:
        p = urlparse(proxy) if proxy else None
        target_host, target_port = (p.hostname, p.port or 3128) if p else (endpoint.host, endpoint.port)
        what = f"the proxy {target_host}:{target_port}" if p else f"the storage endpoint {endpoint}"
        # DNS: with a proxy, the proxy resolves the endpoint's name; we resolve the proxy's.
        def dns():
            try:
                addrs = sorted({a[4][0] for a in socket.getaddrinfo(target_host, target_port, type=socket.SOCK_STREAM)})
                return ProbeStep("dns", "pass", f"{target_host} resolves to {', '.join(addrs[:4])}"
                                 + (" (the proxy resolves the endpoint's name)" if p else ""))
            except socket.gaierror as exc:
                err = StorageEndpointNotResolved(host=target_host, reason=exc.strerror or str(exc),
                                                 where=f"HttpProxy.Host in {config_path}" if p else "the server's storage settings")
                return ProbeStep("dns", "fail", err.text, err.fix, err.code)
        if timed("dns", dns).status == "fail":
            return result

        def tcp():
            reason = _tcp_ok(target_host, target_port, timeout)
            if reason is None:
                return ProbeStep("tcp", "pass", f"TCP connection to {what} opened")
            if p:
                err = ProxyUnreachable(proxy=f"{target_host}:{target_port}", reason=reason, endpoint=str(endpoint), config=config_path)
            else:
                err = StorageEndpointTimeout(endpoint=str(endpoint), timeout=timeout, via="", detail=reason, config=config_path)
            return ProbeStep("tcp", "fail", err.text, err.fix, err.code)
        if timed("tcp", tcp).status == "fail":
            return result

        sock_holder: dict[str, Any] = {}

        def tunnel():
            sock = socket.create_connection((target_host, target_port), timeout=timeout)
            auth = ""
            if p and p.username:
                token = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
                auth = f"Proxy-Authorization: Basic {token}\r\n"
            hostport = f"{_bracket(endpoint.host)}:{endpoint.port}"
            if endpoint.tls:
                sock.sendall(f"CONNECT {hostport} HTTP/1.1\r\nHost: {hostport}\r\n{auth}\r\n".encode())
            else:
                sock.sendall(f"HEAD http://{hostport}/ HTTP/1.1\r\nHost: {hostport}\r\n{auth}Connection: close\r\n\r\n".encode())
            try:
                status, line = _read_status(sock)
            except OSError as exc:
                sock.close()
                return ProbeStep("proxy", "fail", f"the proxy did not answer for {endpoint} within {timeout:g} s ({exc})",
                                 f"Check the proxy at {target_host}:{target_port} and its upstream route.", StorageEndpointTimeout.code)
            if status in (407,) or (status == 401 and endpoint.tls):
                sock.close()
                err = ProxyAuthenticationRequired(proxy=f"{target_host}:{target_port}", status=status, endpoint=str(endpoint), config=config_path)
                return ProbeStep("proxy", "fail", err.text, err.fix, err.code)
            if endpoint.tls and status != 200:
                sock.close()
                err = ProxyRefusedEndpoint(proxy=f"{target_host}:{target_port}", endpoint=str(endpoint), line=line)
                return ProbeStep("proxy", "fail", err.text, err.fix, err.code)
            if not endpoint.tls and status in (403, 502, 503, 504) and status != 0:
                sock.close()
                err = ProxyRefusedEndpoint(proxy=f"{target_host}:{target_port}", endpoint=str(endpoint), line=line)
                return ProbeStep("proxy", "fail", err.text, err.fix, err.code)
            if endpoint.tls:
                sock_holder["sock"] = sock
            else:
                sock.close()
            return ProbeStep("proxy", "pass", f"the proxy forwards to {endpoint} ({line})")

        if p:
            try:
                if timed("proxy", tunnel).status == "fail":
                    return result
            except OSError as exc:
                steps.append(ProbeStep("proxy", "fail", f"the proxy dropped the connection: {exc}",
                                       f"Check the proxy at {target_host}:{target_port}.", ProxyUnreachable.code))
                return result

        if endpoint.tls:
            verify = opts.get("connection_verify", opts.get("verify", True))

            def tls():
                sock = sock_holder.pop("sock", None) or socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
                sock.settimeout(timeout)
                try:
                    with _ssl_context(verify).wrap_socket(sock, server_hostname=endpoint.host) as tls_sock:
                        cert = tls_sock.getpeercert() or {}
                        subject = dict(x[0] for x in cert.get("subject", ())) if cert else {}
                        return ProbeStep("tls", "pass", f"TLS {tls_sock.version()} with {endpoint.host}: certificate "
                                         f"{subject.get('commonName', '?')} valid until {cert.get('notAfter', '?')}")
                except ssl.SSLCertVerificationError as exc:
                    err = StorageCertificateUntrusted(endpoint=str(endpoint), reason=exc.verify_message or str(exc), config=config_path)
                    return ProbeStep("tls", "fail", err.text, err.fix, err.code)
                except (ssl.SSLError, OSError) as exc:
                    err = StorageTlsFailed(endpoint=str(endpoint), reason=str(exc))
                    return ProbeStep("tls", "fail", err.text, err.fix, err.code)
            if timed("tls", tls).status == "fail":
                return result
        sock = sock_holder.pop("sock", None)
        if sock:
            sock.close()

    # an authenticated request, the way backups go (proxy, CA, credentials), without retries
    def request():
        from haven.engine.urls import open_backend

        req_opts = dict(opts)
        if scheme != "file":
            req_opts.setdefault("timeout", timeout)
        if scheme in ("azure", "s3"):
            req_opts.setdefault("sdk_retries", 0)
        try:
            inner = open_backend(storage_url, retry=False, **req_opts)
        except HavenError as exc:
            return ProbeStep("request", "fail", exc.text, exc.fix, exc.code)
        except (TypeError, ValueError) as exc:
            err = StorageOptionsInvalid(url=storage_url, reason=str(exc))
            return ProbeStep("request", "fail", err.text, err.fix, err.code)
        backend = ProxyAwareBackend(inner, storage_url, req_opts, replace(config, timeout=timeout), config_path)
        try:
            backend.exists(probe_name)
            return ProbeStep("request", "pass", f"an authenticated request to {backend.location} succeeded")
        except HavenError as exc:
            return ProbeStep("request", "fail", exc.text, exc.fix, exc.code)
        finally:
            try:
                backend.close()
            except Exception:
                pass

    timed("request", request)
    return result

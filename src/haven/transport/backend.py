"""Where a storage URL's traffic goes, and the backend the host opens for it.

``backend_options(url, options, config)`` turns the agent configuration into the options ``open_backend`` takes for each
kind of storage URL (``proxies=`` for Azure Blob, S3 and Haven's endpoint; ``connection_verify=`` /
``verify=`` for the CA). ``open_agent_backend`` opens a backend the agent way: the engine's backend,
wrapped by :class:`ProxyAwareBackend` (typed proxy and time-out errors; with a region's credentials, their
settings named when they are refused and secrets kept out of errors), wrapped by the engine's retry.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from haven.engine.backend import Backend, WrappingBackend
from haven.engine.errors import StorageTimeout, StorageUnavailable
from haven.errors import HavenError
from haven.transport.agentconf import DEFAULT_TIMEOUT, AgentNetworkConfig, _bracket, agent_config_path, load_agent_config
from haven.transport.credentials import CREDENTIALS_FROM, credentials_error, scrub, secret_values
from haven.transport.errors import ProxyAuthenticationRequired, ProxyUnreachable, StorageEndpointTimeout, StorageOptionsInvalid

__all__ = ["Endpoint", "endpoint_of", "backend_options", "open_agent_backend", "ProxyAwareBackend"]


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
    credentials_from = opts.pop(CREDENTIALS_FROM, None)
    secrets = secret_values(opts)
    config = config or load_agent_config(home)
    opts = backend_options(storage_url, opts, config)
    try:
        inner = open_backend(storage_url, retry=False, **opts)
    except (TypeError, ValueError) as exc:
        if not secrets:
            raise
        raise StorageOptionsInvalid(url=storage_url, reason=scrub(str(exc), secrets)) from None
    wrapped = ProxyAwareBackend(inner, storage_url, opts, config, config_path=str(agent_config_path(home)) if home else "agent.conf",
                                credentials_from=credentials_from, secrets=secrets)
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
    :class:`StorageEndpointTimeout` naming the endpoint (and the proxy it went through). With a region's
    credentials (``credentials_from``, ``secrets``: see :mod:`haven.transport.credentials`), credentials the
    storage refuses name the region's settings, and no error carries a secret.
    """

    def __init__(self, inner: Backend, storage_url: str, options: dict[str, Any], config: AgentNetworkConfig,
                 config_path: str = "agent.conf", credentials_from: dict[str, str] | None = None, secrets: list[str] | None = None):
        super().__init__(inner)
        self.credentials_from, self.secrets = credentials_from, list(secrets or ())
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
            new = credentials_error(self._translate(exc), self.location, self.credentials_from, self.secrets)
            if new is exc:
                raise
            if self.secrets:
                raise new from None  # the SDK's exception is not chained: its text may hold a secret
            raise new from exc
        except Exception as exc:  # an SDK's own exception that no backend converted: its text must not carry a secret
            if any(s in str(exc) for s in self.secrets):
                raise StorageUnavailable(detail=scrub(f"{type(exc).__name__}: {exc}", self.secrets)) from None
            raise

    def is_permanent(self, exc: BaseException) -> bool:
        if isinstance(exc, ProxyAuthenticationRequired):
            return True
        if isinstance(exc, (ProxyUnreachable, StorageEndpointTimeout)):
            return False
        return self.inner.is_permanent(exc)

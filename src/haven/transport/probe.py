"""The connectivity probe (``haven prepare check``): DNS, TCP, proxy, TLS and an authenticated request, step by step."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from haven.errors import HavenError
from haven.transport.agentconf import AgentNetworkConfig, _bracket, _redact
from haven.transport.backend import ProxyAwareBackend, _tcp_ok, backend_options, endpoint_of
from haven.transport.credentials import CREDENTIALS_FROM, scrub, secret_values
from haven.transport.errors import (
    ProxyAuthenticationRequired,
    ProxyRefusedEndpoint,
    ProxyUnreachable,
    StorageCertificateUntrusted,
    StorageEndpointNotResolved,
    StorageEndpointTimeout,
    StorageOptionsInvalid,
    StorageTlsFailed,
)

__all__ = ["ProbeStep", "ProbeResult", "probe_endpoint"]


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
    opts = dict(options or {})
    credentials_from = opts.pop(CREDENTIALS_FROM, None)
    secrets = secret_values(opts)
    opts = backend_options(storage_url, opts, config)
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
            err = StorageOptionsInvalid(url=storage_url, reason=scrub(str(exc), secrets))
            return ProbeStep("request", "fail", err.text, err.fix, err.code)
        backend = ProxyAwareBackend(inner, storage_url, req_opts, replace(config, timeout=timeout), config_path,
                                    credentials_from=credentials_from, secrets=secrets)
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

"""Backup traffic through real proxies (tinyproxy, squid; with and without basic auth), HTTPS to
Azurite with a test CA by CONNECT; typed errors for a 407, a dead proxy and a time-out, with nothing
recorded in the vault."""

from __future__ import annotations

import os
import time

import pytest

from haven.engine import LocalKeyWrapper, Repository
from haven.engine.retry import RetryingBackend
from haven.transport import (
    ProxyAuthenticationRequired,
    ProxyUnreachable,
    StorageEndpointTimeout,
    load_agent_config,
    open_agent_backend,
)
from tests.engine.sources import random_disk

from .conftest import write_conf

KEK = LocalKeyWrapper(b"prepare-test-master-key-01234567")
MiB = 1 << 20
PROXIES = ["tinyproxy", "squid", "tinyproxy_auth", "squid_auth"]


def _proxy_conf(proxy, ca: str | None = None, user: str | None = "same", password: str | None = "same", extra: str = "") -> str:
    lines = [f"HttpProxy.Host={proxy.host}", f"HttpProxy.Port={proxy.port}"]
    user = proxy.user if user == "same" else user
    password = proxy.password if password == "same" else password
    if user:
        lines.append(f"HttpProxy.User={user}")
    if password:
        lines.append(f"HttpProxy.Password={password}")
    if ca:
        lines.append(f"Storage.CABundle={ca}")
    return "\n".join(["# written by the test, waagent.conf style", *lines, extra]) + "\n"


def _target(request, kind: str, name: str) -> tuple[str, dict]:
    if kind == "azure-https":
        return f"azure://{name}", {"connection_string": request.getfixturevalue("azurite_https")}
    if kind == "s3":
        return f"s3://{name}/vault", dict(request.getfixturevalue("s3_server"))
    raise AssertionError(kind)


def _backup_and_restore(backend, tmp_path, seed: int) -> None:
    repo = Repository.init(backend, KEK, {"name": "proxy-test", "region": "local"})
    disk = random_disk("vda", 3 * MiB + 123, seed=seed, fill=0.8)
    summary = repo.backup("vm-proxy", "p1", [disk], {"vm": "vm-proxy"})
    assert summary.bytes_new > 0
    again = Repository.open(backend, KEK)
    out = tmp_path / "restored.img"
    again.restore_disk("vm-proxy", "p1", "vda", out)
    assert out.read_bytes() == disk.image()
    assert [p.point_id for p in again.list_points("vm-proxy")] == ["p1"]


def _seen_by_proxy(proxy, needle: str, wait: float = 5.0) -> bool:
    """squid logs a CONNECT when the tunnel closes: poll its log a little."""
    end = time.monotonic() + wait
    while True:
        if needle in proxy.logs():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


@pytest.mark.parametrize("target", ["azure-https", "s3"])
@pytest.mark.parametrize("proxy_name", PROXIES)
def test_backup_and_restore_through_each_proxy(request, tmp_path, test_ca, proxy_name, target):
    proxy = request.getfixturevalue(proxy_name)
    home = tmp_path / "home"
    write_conf(home, _proxy_conf(proxy, ca=test_ca["ca"]))
    name = f"px{abs(hash((proxy_name, target, str(tmp_path)))) % 10**8}"
    url, options = _target(request, target, name)
    backend = open_agent_backend(url, options, home=home)
    assert isinstance(backend, RetryingBackend) and backend.inner.proxy.startswith("http://")
    _backup_and_restore(backend, tmp_path, seed=len(proxy_name) + len(target))
    endpoint = backend.inner.endpoint
    backend.close()
    assert _seen_by_proxy(proxy, f"{endpoint.host}:{endpoint.port}") or _seen_by_proxy(proxy, str(endpoint.port)), proxy.logs()[-2000:]


def test_environment_variables_route_through_the_proxy(request, tmp_path, squid, test_ca):
    """No HttpProxy.Host: the /etc/environment-style https_proxy line (or the process env) is used, no_proxy respected."""
    home = tmp_path / "home"
    write_conf(home, f"Storage.CABundle={test_ca['ca']}\n")
    cfg = load_agent_config(home, env={"https_proxy": squid.url, "no_proxy": "example.org"})
    assert cfg.source.startswith("environment") and cfg.proxy_for("https", "127.0.0.1") == squid.url
    assert cfg.proxy_for("https", "store.example.org") is None  # no_proxy
    url, options = _target(request, "azure-https", "envproxy")
    backend = open_agent_backend(url, options, config=cfg)
    _backup_and_restore(backend, tmp_path, seed=7)
    backend.close()
    assert _seen_by_proxy(squid, "CONNECT 127.0.0.1"), squid.logs()[-2000:]
    # the same through agent.conf's own http_proxy= line (the seeds' /etc/environment line)
    write_conf(home, f"http_proxy={squid.url}\nhttps_proxy={squid.url}\nStorage.CABundle={test_ca['ca']}\n")
    cfg2 = load_agent_config(home, env={})
    assert "http_proxy" in cfg2.source and cfg2.proxy_for("https", "127.0.0.1") == squid.url


@pytest.mark.parametrize("target", ["azure-https", "s3"])
@pytest.mark.parametrize("proxy_name,password", [("squid_auth", None), ("squid_auth", "wrong"), ("tinyproxy_auth", None),
                                                 ("tinyproxy_auth", "wrong")])
def test_proxy_demanding_credentials_gives_the_typed_error_and_records_nothing(request, tmp_path, test_ca, proxy_name, password, target):
    proxy = request.getfixturevalue(proxy_name)
    url, options = _target(request, target, f"auth{abs(hash((proxy_name, password, target))) % 10**8}")
    # the vault exists (made on a direct path) …
    direct = open_agent_backend(url, {**options, **({"connection_verify": test_ca["ca"]} if target == "azure-https" else {})},
                                config=load_agent_config(None, env={}))
    Repository.init(direct, KEK, {"name": "auth-test"})
    # … and the agent's proxy lacks (or has wrong) credentials
    home = tmp_path / "home"
    write_conf(home, _proxy_conf(proxy, ca=test_ca["ca"], user=proxy.user if password else None, password=password))
    backend = open_agent_backend(url, options, home=home)
    with pytest.raises(ProxyAuthenticationRequired) as info:
        repo = Repository.open(backend, KEK)
        repo.backup("vm-x", "p1", [random_disk("vda", MiB, seed=3)], {})
    err = info.value
    assert "the proxy requires authentication: check the credentials in the agent configuration" in err.text.lower()
    assert err.code == "UserErrorProxyAuthenticationRequired" and "HttpProxy.User" in err.fix and str(home / "agent.conf") in err.fix
    assert f"{proxy.host}:{proxy.port}" in err.text
    assert backend.retries == 0  # permanent: not retried
    assert Repository.open(direct, KEK).list_points("vm-x") == []  # nothing recorded


def test_dead_proxy_names_the_proxy_and_records_nothing(request, tmp_path, dead_port, test_ca):
    url, options = _target(request, "s3", "deadproxy")
    direct = open_agent_backend(url, options, config=load_agent_config(None, env={}))
    Repository.init(direct, KEK, {"name": "dead-proxy"})
    home = tmp_path / "home"
    write_conf(home, f"HttpProxy.Host=127.0.0.1\nHttpProxy.Port={dead_port}\n")
    backend = open_agent_backend(url, {**options, "retry_attempts": 2}, home=home)
    with pytest.raises(ProxyUnreachable) as info:
        Repository.open(backend, KEK)
    assert f"127.0.0.1:{dead_port}" in info.value.text and info.value.code == "TransientErrorProxyUnreachable"
    assert "HttpProxy.Host/HttpProxy.Port" in info.value.fix
    assert Repository.open(direct, KEK).list_points("vm-x") == []


def test_timeout_names_the_endpoint_that_did_not_answer(tmp_path, blackhole, squid):
    home = tmp_path / "home"
    write_conf(home, "Storage.Timeout=1\n")
    url = f"haven+http://127.0.0.1:{blackhole}/v1"
    backend = open_agent_backend(url, {"token": "t", "retry_attempts": 1}, home=home)
    with pytest.raises(StorageEndpointTimeout) as info:
        backend.store("probe", b"x")
    assert f"http://127.0.0.1:{blackhole}" in info.value.text and "1 s" in info.value.text
    assert "did not answer" in info.value.text
    # through a proxy: the proxy accepts, the endpoint behind it does not answer
    write_conf(home, f"Storage.Timeout=1\nHttpProxy.Host={squid.host}\nHttpProxy.Port={squid.port}\n")
    backend = open_agent_backend(url, {"token": "t", "retry_attempts": 1}, home=home)
    with pytest.raises(StorageEndpointTimeout) as info:
        backend.load("probe")
    assert f"http://127.0.0.1:{blackhole}" in info.value.text and f"through the proxy {squid.host}:{squid.port}" in info.value.text


def test_agent_conf_is_validated_and_secrets_are_not_shown(tmp_path):
    from haven.transport import AgentConfigInvalid, write_agent_config

    home = tmp_path / "home"
    write_conf(home, "HttpProxy.Host=10.0.0.5\nHttpProxy.Port=99999\n")
    with pytest.raises(AgentConfigInvalid) as info:
        load_agent_config(home, env={})
    assert "HttpProxy.Port" in info.value.text
    path = write_agent_config(home, host="10.0.0.5", port=3128, user="u", password="p@ss")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    cfg = load_agent_config(home, env={"https_proxy": "http://ignored:1"})
    assert cfg.proxy_for("https", "blob.example") == "http://u:p%40ss@10.0.0.5:3128"
    shown = cfg.describe()
    assert "p@ss" not in str(shown) and "p%40ss" not in str(shown) and shown["proxy_auth"] is True

"""``haven prepare firewall-rules``: nftables rules for the allow-list and proxy options, from the
region's published ranges (the seeds' NSG rule, in nftables)."""

from __future__ import annotations

import subprocess

import pytest

from haven.errors import UserError
from haven.services.prepare import FirewallOptionInvalid, nftables_rules
from tests.services._util import require_binary

from .test_check import cli, owner, world  # noqa: F401  (fixtures)

DOC = {"region": "west", "storage_endpoints": ["s3"], "ip_ranges": ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/48"]}


def test_allow_list_rules():
    text = nftables_rules(DOC, "allow-list")
    assert "table inet haven_backup" in text and "elements = { 203.0.113.0/24, 198.51.100.7/32 }" in text
    assert "elements = { 2001:db8::/48 }" in text
    assert "ip daddr @storage_v4 tcp dport { 80, 443 } accept" in text and "ip6 daddr @storage_v6 tcp dport { 80, 443 } accept" in text
    assert text.rstrip().endswith("}") and 'tcp dport { 80, 443 } drop comment "lockdown' in text


def test_proxy_rules_are_the_seeds_nsg_rule():
    text = nftables_rules(DOC, "proxy", proxy_host="10.0.0.5", proxy_port=3128)
    assert "ip daddr 10.0.0.5 tcp dport 3128 accept" in text  # agent hosts: only the proxy
    assert "ip saddr 10.0.0.5/32 tcp dport 80-443 accept" in text  # the NSG rule: proxy → internet 80-443
    assert "NSG-lockdown" in text and "priority 200" in text


def test_bad_options_are_refused_with_a_fix():
    with pytest.raises(FirewallOptionInvalid) as info:
        nftables_rules(DOC, "proxy")
    assert "--proxy-host" in info.value.text and isinstance(info.value, UserError)
    with pytest.raises(FirewallOptionInvalid):
        nftables_rules(DOC, "vpn")
    with pytest.raises(FirewallOptionInvalid):
        nftables_rules({"region": "x", "ip_ranges": []}, "allow-list")


def test_rules_parse_with_nft(tmp_path):
    require_binary("nft")
    for text in (nftables_rules(DOC, "allow-list"), nftables_rules(DOC, "proxy", proxy_host="10.0.0.5")):
        f = tmp_path / "rules.nft"
        f.write_text(text)
        r = subprocess.run(["nft", "-c", "-f", str(f)], capture_output=True, text=True)
        assert r.returncode == 0 or "Operation not permitted" in r.stderr, r.stderr


def test_cli_uses_the_region_ip_ranges(cli, core):
    out = cli("prepare", "firewall-rules", "--region", "local", "--option", "allow-list").stdout
    assert "GET /api/v1/regions/local/ip-ranges" in out and "127.0.0.0/8" in out
    out = cli("prepare", "firewall-rules", "--region", "local", "--option", "proxy", "--proxy-host", "10.0.0.5").stdout
    assert "ip saddr 10.0.0.5/32 tcp dport 80-443 accept" in out
    bad = cli("prepare", "firewall-rules", "--region", "local", "--option", "proxy", expect=2)
    assert "UserErrorFirewallOptionInvalid" in bad.output
    missing = cli("prepare", "firewall-rules", "--region", "mars", expect=3)
    assert "UserErrorRegionNotFound" in missing.output


def test_cli_proxy_set_and_show_write_agent_conf(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from haven.transport import load_agent_config
    from haven.cli.main import app

    monkeypatch.setenv("HAVEN_HOME", str(tmp_path))
    r = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "set", "--host", "10.0.0.5", "--port", "3128",
                                 "--user", "backup", "--password", "pw-secret", "--no-proxy", "localhost,.internal"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["proxy"] == "http://backup:***@10.0.0.5:3128" and "pw-secret" not in r.stdout
    text = (tmp_path / "agent.conf").read_text()
    assert "HttpProxy.Host=10.0.0.5\nHttpProxy.Port=3128\n" in text and "HttpProxy.Password=pw-secret" in text
    cfg = load_agent_config(tmp_path, env={})
    assert cfg.proxy_for("https", "blob.example") == "http://backup:pw-secret@10.0.0.5:3128"
    assert cfg.proxy_for("https", "store.internal") is None
    r = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "set"])  # no --host: direct again
    assert r.exit_code == 0 and json.loads(r.stdout)["proxy"] is None
    r = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "show"])
    assert r.exit_code == 0 and json.loads(r.stdout)["proxy_source"] == "none"


def test_cli_proxy_set_refuses_a_bad_host_and_goes_direct_over_http_proxy_lines(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from haven.cli.main import app

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HAVEN_HOME", str(tmp_path))
    conf = tmp_path / "agent.conf"
    conf.write_text("# site proxy\nhttp_proxy=http://10.0.0.7:8080\nhttps_proxy=http://10.0.0.7:8080\nOther.Key=kept\n")
    before = conf.read_text()
    bad = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "set", "--host", "bad host", "--port", "3128"])
    assert bad.exit_code == 2 and "UserErrorProxyHostInvalid" in bad.output, bad.output
    assert conf.read_text() == before  # nothing written
    shown = json.loads(CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "show"]).stdout)
    assert shown["proxy"] == "http://10.0.0.7:8080"
    r = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "set"])  # no --host: direct
    assert r.exit_code == 0 and json.loads(r.stdout)["proxy"] is None, r.output
    r = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "show"])
    assert r.exit_code == 0 and json.loads(r.stdout)["proxy_source"] == "none"
    assert "Other.Key=kept" in conf.read_text()
    ok = CliRunner().invoke(app, ["-o", "json", "prepare", "proxy", "set", "--host", "proxy-1.example.com", "--port", "3128"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["proxy"] == "http://proxy-1.example.com:3128", ok.output

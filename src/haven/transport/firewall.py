"""``haven prepare firewall-rules``: the nftables rules of a network option (IP allow-list, or proxy only)
for the host agents' outbound backup traffic, rendered from a region's published storage address ranges."""

from __future__ import annotations

import ipaddress
import socket

from haven.errors import UserError

__all__ = ["nftables_rules", "FirewallOptionInvalid"]


class FirewallOptionInvalid(UserError):
    code = "UserErrorFirewallOptionInvalid"
    message = "Cannot render firewall rules: {reason}."
    recommendation = "Use --option allow-list, or --option proxy with --proxy-host <IP address> [--proxy-port <port>]."


def _split(ranges: list[str]) -> tuple[list[str], list[str]]:
    v4, v6 = [], []
    for r in ranges:
        net = ipaddress.ip_network(r.strip(), strict=False)
        (v4 if net.version == 4 else v6).append(str(net))
    return v4, v6


def _ports(ports: list[int]) -> str:
    ports = sorted(set(ports))
    if ports == [80, 443]:
        return "{ 80, 443 }"
    return "{ " + ", ".join(str(p) for p in ports) + " }" if len(ports) > 1 else str(ports[0])


def nftables_rules(ranges_doc: dict, option: str, proxy_host: str | None = None, proxy_port: int = 3128,
                   ports: list[int] | None = None) -> str:
    """The nftables rules for a network option (``allow-list`` or ``proxy``) from ``GET /regions/{r}/ip-ranges``."""
    region = ranges_doc.get("region", "?")
    ranges = list(ranges_doc.get("ip_ranges") or [])
    ports = list(ports or [80, 443])
    try:
        v4, v6 = _split(ranges)
    except ValueError as exc:
        raise FirewallOptionInvalid(reason=f"the region publishes an invalid range ({exc})") from None
    dport = _ports(ports)
    head = [
        "#!/usr/sbin/nft -f",
        f"# Haven: outbound backup traffic of the host agents, region {region!r} ({option}).",
        f"# Published ranges of the region's storage endpoints (GET /api/v1/regions/{region}/ip-ranges): {', '.join(ranges) or 'none'}",
        "# Load with: nft -f <this file>. Re-run when the region's ranges change.",
        "",
    ]
    if option == "allow-list":
        if not ranges:
            raise FirewallOptionInvalid(reason=f"region {region!r} publishes no address ranges")
        body = ["table inet haven_backup {"]
        if v4:
            body += ["    set storage_v4 {", "        type ipv4_addr; flags interval;", f"        elements = {{ {', '.join(v4)} }}", "    }"]
        if v6:
            body += ["    set storage_v6 {", "        type ipv6_addr; flags interval;", f"        elements = {{ {', '.join(v6)} }}", "    }"]
        body += ["    chain output {", "        type filter hook output priority 0; policy accept;",
                 "        ct state established,related accept", '        oifname "lo" accept']
        if v4:
            body.append(f'        ip daddr @storage_v4 tcp dport {dport} accept comment "allow-backup-storage"')
        if v6:
            body.append(f'        ip6 daddr @storage_v6 tcp dport {dport} accept comment "allow-backup-storage"')
        body += [f'        tcp dport {dport} drop comment "lockdown: no other outbound web traffic"', "    }", "}"]
        return "\n".join(head + body) + "\n"
    if option == "proxy":
        if not proxy_host:
            raise FirewallOptionInvalid(reason="--proxy-host is required with --option proxy")
        try:
            addr = ipaddress.ip_address(proxy_host)
        except ValueError:
            try:
                addr = ipaddress.ip_address(socket.gethostbyname(proxy_host))
            except OSError:
                raise FirewallOptionInvalid(reason=f"the proxy host {proxy_host!r} is not an address and does not resolve") from None
        fam = "ip" if addr.version == 4 else "ip6"
        prefix = f"{addr}/{32 if addr.version == 4 else 128}"
        body = [
            "# 1. On each host running 'haven agent': only the proxy may be reached (HttpProxy.Host/HttpProxy.Port).",
            "table inet haven_backup {",
            "    chain output {",
            "        type filter hook output priority 0; policy accept;",
            "        ct state established,related accept",
            '        oifname "lo" accept',
            f'        {fam} daddr {addr} tcp dport {proxy_port} accept comment "allow-proxy"',
            f'        tcp dport {dport} drop comment "lockdown: backup traffic goes through the proxy"',
            "    }",
            "}",
            "",
            f"# 2. On the proxy server: incoming connections to the proxy's port {proxy_port} (TCP, any remote port).",
            "table inet haven_proxy_inbound {",
            "    chain input {",
            "        type filter hook input priority 0; policy accept;",
            f'        tcp dport {proxy_port} accept comment "allow-proxy-inbound"',
            "    }",
            "}",
            "",
            "# 3. On the network firewall (the seeds' NSG rule 'allow-proxy', priority 200): outbound TCP from the proxy",
            f"#    {prefix}, any source port, to the internet on ports {ports[0]}-{ports[-1]}; other hosts stay locked down.",
            "table inet haven_proxy_egress {",
            "    chain forward {",
            "        type filter hook forward priority 0; policy accept;",
            "        ct state established,related accept",
            f'        {fam} saddr {prefix} tcp dport {min(ports)}-{max(ports)} accept comment "allow-proxy"',
            f'        tcp dport {dport} drop comment "NSG-lockdown"',
            "    }",
            "}",
        ]
        return "\n".join(head + body) + "\n"
    raise FirewallOptionInvalid(reason=f"unknown option {option!r}")

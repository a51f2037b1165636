"""Network connectivity (seeds 000–004, "Network connectivity"): the path each host agent takes to the
vaults' storage (direct or through its proxy, and its last probe of each vault), the region's published
IP ranges, and the firewall rules to add for either option — the allow-list, or an HTTP proxy in three
steps (the agent's proxy, the proxy's inbound rule, the exception rule)."""

from __future__ import annotations

from fastapi import Request

from haven.errors import HavenError
from haven.services.prepare import nftables_rules
from haven.web.pages.base import _int_or_none, _render, router
from haven.web.session import current_caller


@router.get("/network")
def network_page(request: Request, region: str = "", option: str = "allow-list", proxy_host: str = "", proxy_port: str = "3128"):
    core = request.app.state.core
    caller = current_caller(request)
    hosts = core.inventory.list_hosts(caller)
    regions = core.regions.list()
    chosen = next((r["name"] for r in regions if r["name"] == region), regions[0]["name"] if regions else "")
    ranges, rules, error = None, None, None
    if chosen:
        ranges = core.regions.ip_ranges(chosen)
        try:
            port = _int_or_none(proxy_port) or 3128
            rules = nftables_rules(ranges, option if option in ("allow-list", "proxy") else "allow-list",
                                   proxy_host=proxy_host.strip() or None, proxy_port=port)
        except HavenError as e:
            error = e
    return _render(request, "network.html", caller, status=error.http_status if error else 200, hosts=hosts, regions=regions,
                   region=chosen, ranges=ranges, rules=rules, option=option, proxy_host=proxy_host, proxy_port=proxy_port,
                   error=error)

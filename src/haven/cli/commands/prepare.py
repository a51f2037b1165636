"""haven prepare … — check a VM's prerequisites, print firewall rules, set the host agent's proxy."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from haven.cli.output import console, emit
from haven.cli.state import SubOpt, handled, state
from haven.transport.agentconf import set_agent_proxy, show_agent_proxy
from haven.transport.firewall import nftables_rules

app = typer.Typer(help="Prepare the environment for VM backup: checks, firewall rules, the agent's proxy.", no_args_is_help=True)
proxy = typer.Typer(help="The host agent's proxy ($HAVEN_HOME/agent.conf, waagent.conf style).", no_args_is_help=True)
app.add_typer(proxy, name="proxy")

EXIT_FAILED = 7  # the exit code of PreconditionFailed: a prerequisite is not met
_MARK = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


@app.command("check")
@handled
def check(ctx: typer.Context, subscription: SubOpt,
          vm: Annotated[str, typer.Option("--vm", "--item-name", help="The VM to check.")],
          vault: Annotated[Optional[str], typer.Option("--vault", "--vault-name", "-v", help="The vault that will protect it.")] = None,
          host: Annotated[Optional[str], typer.Option("--host", help="The VM's host, when several hosts report the name.")] = None,
          timeout: Annotated[float, typer.Option("--timeout", help="Seconds allowed for each network step.")] = 10.0,
          output: Annotated[Optional[str], typer.Option("--output", "-o", help="table or json")] = None):
    """Check every prerequisite of backing up VM: pass, warn or fail, with the reason and the fix. Exit 0 only when nothing fails."""
    st = state(ctx)
    fmt = output or st.output
    if fmt not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    result = st.client.get(f"/subscriptions/{subscription}/prepare/check", vm=vm, vault=vault, host=host, timeout=timeout)
    if fmt == "json":
        emit(result, "json")
    else:
        console.print(f"VM [bold]{escape(result['vm'])}[/] on host {escape(result['host'])}, region {escape(result['region'])}, "
                      f"{escape(result['power_state'])}; vault: {escape(str(result.get('vault') or '-'))}", highlight=False)
        for c in result["checks"]:
            code = f" [dim]({escape(c['code'])})[/]" if c.get("code") else ""
            console.print(f"  {_MARK[c['status']]}  [bold]{escape(c['check'])}[/]: {escape(c['reason'])}{code}", soft_wrap=True, highlight=False)
            if c.get("fix") and c["status"] != "pass":
                console.print(f"        [yellow]Fix[/]: {escape(c['fix'])}", soft_wrap=True, highlight=False)
        console.print(f"Verdict: {_MARK[result['verdict']]}", highlight=False)
    if not result.get("ok"):
        raise typer.Exit(EXIT_FAILED)


@app.command("firewall-rules")
@handled
def firewall_rules(ctx: typer.Context,
                   region: Annotated[str, typer.Option("--region", "--location", "-l", help="The region of the hosts.")],
                   option: Annotated[str, typer.Option("--option", help="allow-list or proxy")] = "allow-list",
                   proxy_host: Annotated[Optional[str], typer.Option("--proxy-host", help="The proxy's address (option proxy).")] = None,
                   proxy_port: Annotated[int, typer.Option("--proxy-port", help="The proxy's port (option proxy).")] = 3128,
                   port: Annotated[Optional[list[int]], typer.Option("--port", help="Destination ports (default 80 and 443).")] = None):
    """Print the nftables rules for a network option, from the region's published storage address ranges."""
    st = state(ctx)
    ranges = st.client.get(f"/regions/{region}/ip-ranges")
    text = nftables_rules(ranges, option, proxy_host=proxy_host, proxy_port=proxy_port, ports=port or None)
    if st.output == "json":
        emit({"region": region, "option": option, "ip_ranges": ranges.get("ip_ranges", []), "nftables": text}, "json")
    else:
        print(text, end="")


@proxy.command("show")
@handled
def proxy_show(ctx: typer.Context):
    """Show the host agent's outbound path as configured on this machine (passwords hidden)."""
    emit(show_agent_proxy(), state(ctx).output)


@proxy.command("set")
@handled
def proxy_set(ctx: typer.Context,
              host: Annotated[Optional[str], typer.Option("--host", help="HttpProxy.Host; empty to go direct.")] = None,
              port: Annotated[Optional[int], typer.Option("--port", help="HttpProxy.Port")] = None,
              user: Annotated[Optional[str], typer.Option("--user", help="HttpProxy.User (basic authentication)")] = None,
              password: Annotated[Optional[str], typer.Option("--password", envvar="HAVEN_PROXY_PASSWORD", help="HttpProxy.Password")] = None,
              no_proxy: Annotated[Optional[str], typer.Option("--no-proxy", help="HttpProxy.NoProxy: hosts reached directly")] = None,
              ca_bundle: Annotated[Optional[str], typer.Option("--ca-bundle", help="Storage.CABundle: a CA file for HTTPS endpoints")] = None,
              timeout: Annotated[Optional[float], typer.Option("--timeout", help="Storage.Timeout in seconds")] = None):
    """Write the proxy into $HAVEN_HOME/agent.conf on this machine (mode 0600); the agent uses it for its next request."""
    emit(set_agent_proxy(host=host or None, port=port if host else None, user=user, password=password,
                         no_proxy=no_proxy, ca_bundle=ca_bundle, timeout=timeout), state(ctx).output)

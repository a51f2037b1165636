"""haven host … (register a remote host) and haven agent (run the host agent on it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import quote

import typer

from haven.cli.state import CursorOpt, LimitOpt, handled, state

__all__ = ["host", "agent"]

host = typer.Typer(help="Hypervisor hosts and their agents.", no_args_is_help=True)


@host.command("add")
@handled
def host_add(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n", help="The host's name.")],
             region: Annotated[str, typer.Option("--region", help="The region the host is in.")],
             adapter: Annotated[str, typer.Option("--adapter", help="Adapter the agent will use there.")] = "folder:///var/lib/haven/vms",
             token_file: Annotated[Optional[Path], typer.Option("--token-file", help="Write the agent's credential here (mode 0600) instead of printing it.")] = None,
             share: Annotated[Optional[list[str]], typer.Option("--share", help="Share the host with this subscription (repeatable).")] = None):
    """Register a remote host. Its agent's credential is shown (or written) once.

    A remote host is shared with no subscription until --share here or 'haven host share'.
    """
    st = state(ctx)
    body = {"name": name, "region": region, "adapter": adapter, "shares": share or []}
    _show_with_secret(st, st.client.post("/hosts", body), token_file)


@host.command("rotate-token")
@handled
def host_rotate_token(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n", help="The host's name.")],
                      token_file: Annotated[Optional[Path], typer.Option("--token-file", help="Write the new credential here (mode 0600).")] = None):
    """A new credential for the host's agent; the old ones stop working at once (restart the agent with it)."""
    st = state(ctx)
    _show_with_secret(st, st.client.post(f"/hosts/{name}/agent-token"), token_file)


@host.command("list")
@handled
def host_list(ctx: typer.Context, limit: LimitOpt = None, cursor: CursorOpt = None):
    """Registered hosts: region, adapter, whether the server or a remote agent runs their jobs."""
    state(ctx).show_list("/hosts", ["name", "region", "adapter", "agent", "agent_version", "last_seen", "shares"], limit, cursor)


@host.command("share")
@handled
def host_share(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n", help="The host's name.")],
               subscription: Annotated[str, typer.Option("--subscription", "-s", help="Subscription name or id.")]):
    """Share a host with a subscription: it then sees and protects the host's VMs (global Owner only)."""
    st = state(ctx)
    st.show(st.client.post(f"/hosts/{quote(name, safe='')}/shares/{quote(subscription, safe='')}"))


@host.command("unshare")
@handled
def host_unshare(ctx: typer.Context, name: Annotated[str, typer.Option("--name", "-n", help="The host's name.")],
                 subscription: Annotated[str, typer.Option("--subscription", "-s", help="Subscription name or id.")]):
    """Stop sharing a host with a subscription (refused while the subscription protects VMs there)."""
    st = state(ctx)
    st.show(st.client.delete(f"/hosts/{quote(name, safe='')}/shares/{quote(subscription, safe='')}"))


def _show_with_secret(st, answer: dict, token_file: Path | None) -> None:
    """Show the answer; with ``token_file`` the agent credential goes to that file (0600), not the screen."""
    if token_file is not None:
        _write_secret(token_file, answer.pop("agent_token"))
        answer["agent_token_file"] = str(token_file)
    st.show(answer)


def _write_secret(path: Path, secret: str) -> None:
    from haven.files import write_private

    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (secret + "\n").encode())


@handled
def agent(
    server: Annotated[str, typer.Option("--server", envvar="HAVEN_SERVER", help="The Haven server's URL.")],
    token_file: Annotated[Path, typer.Option("--token-file", help="File holding this host's agent credential ('haven host add').")],
    adapter: Annotated[str, typer.Option("--adapter", help="folder:///path or libvirt URI (qemu:///system).")] = "folder:///var/lib/haven/vms",
    workers: Annotated[int, typer.Option("--workers", min=1, max=16, help="Jobs run at once.")] = 1,
    home: Annotated[Optional[Path], typer.Option("--home", help="Folder of agent.conf (proxy settings); default $HAVEN_HOME.")] = None,
):
    """Run the host agent: report this host's VMs and run its backup and restore jobs. Ctrl-C stops it."""
    from haven.agent.remote import RemoteAgent
    from haven.config import default_home
    from haven.engine.allocator import keep_chunk_buffers

    keep_chunk_buffers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: job polls and heartbeats would fill the log (~50 MB a day)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    token = token_file.read_text().strip()
    runner = RemoteAgent(server, token, adapter, workers=workers, home=home or default_home())
    host_info = runner.start()
    print(f"haven agent: host {host_info['name']} in region {host_info['region']}, serving {adapter}", flush=True)
    try:
        runner.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()

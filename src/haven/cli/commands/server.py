"""haven serve (API, dashboard, job runner, local agent in one process) and haven demo."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from haven.cli.state import handled, state

__all__ = ["serve", "demo"]


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Listen port (default 8733).")] = None,
    home: Annotated[Optional[Path], typer.Option("--home", help="Data folder (default $HAVEN_HOME or ~/.haven).")] = None,
    run_demo: Annotated[bool, typer.Option("--demo", help="Once the server is up: boot the test guest (where QEMU runs), write a file in it, "
                                                           "back it up, restore it and read the file back; else back up and restore a "
                                                           "disk-only sample VM.")] = False,
):
    """Run the server: API, dashboard, job runner and the local host agent, on the embedded default."""
    import uvicorn

    from haven.agent.local import LocalAgent
    from haven.api.app import create_app
    from haven.config import load_settings
    from haven.engine.allocator import keep_chunk_buffers
    from haven.files import private_dir
    from haven.jobs.scheduler import Scheduler
    from haven.services.core import Haven

    keep_chunk_buffers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = load_settings(home, **overrides)
    private_dir(settings.home)
    settings.vms_root.mkdir(parents=True, exist_ok=True)
    core = Haven(settings)
    if core.auth.bootstrap_local_owner(settings.credentials_path, settings.server_url):
        print(f"Made an Owner token for the local user in {settings.credentials_path}")
    agents = [LocalAgent(core, uri, host_name=name) for uri, name in own_hypervisors(settings)]
    for a in agents:
        a.start()
        print(f"Host agent for {a.host_name}: {a.adapter_url}", flush=True)
    agent = agents[0]
    scheduler = Scheduler(core)
    scheduler.start()
    app = create_app(core)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    if run_demo:
        threading.Thread(target=_demo_when_up, args=(server, settings, agent), daemon=True).start()
    print(f"Haven {settings.server_url}  (API {settings.server_url}/api/v1, docs {settings.server_url}/docs)")
    try:
        server.run()
    finally:
        scheduler.stop()
        for a in agents:
            a.stop()
        core.close()


def libvirt_answers(uri: str = "qemu:///system") -> tuple[bool, str]:
    """Whether libvirtd answers on ``uri`` (libvirt-python installed, the daemon running)."""
    try:
        import libvirt
    except ImportError:
        return False, "libvirt-python is not installed"
    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return False, str(exc)
    try:
        conn.getLibVersion()
        return True, ""
    except libvirt.libvirtError as exc:
        return False, str(exc)
    finally:
        conn.close()


def own_hypervisors(settings) -> list[tuple[str, str]]:
    """The server's own host agents: (adapter URI, host name) for each of ``[server] hypervisors``; by default the
    VM folder, plus ``qemu:///system`` when libvirtd answers there. The first keeps the machine's name; each
    other is named ``<machine>-<scheme>`` (one host per adapter)."""
    import socket

    uris = list(settings.hypervisors) if settings.hypervisors is not None else None
    if uris is None:
        uris = [f"folder://{settings.vms_root}"]
        ok, why = libvirt_answers("qemu:///system")
        if ok:
            uris.append("qemu:///system")
        else:
            print(f"libvirt VMs are not backed up by this server: qemu:///system does not answer ({why}); "
                  "see README.md, 'libvirt VMs'", flush=True)
    machine = socket.gethostname().split(".")[0] or "localhost"
    out, seen = [], set()
    for i, uri in enumerate(uris):
        scheme = uri.split("://", 1)[0].replace("+", "-")
        name = machine if i == 0 else f"{machine}-{scheme}"
        n = 2
        while name in seen:
            name, n = f"{machine}-{scheme}{n}", n + 1
        seen.add(name)
        out.append((uri, name))
    return out


def _demo_when_up(server, settings, agent) -> None:
    import time

    from haven.transport.client import ApiClient
    from haven.demo import boot_live_guest, make_sample_vm, run_demo, run_live_demo

    def say(message: str) -> None:
        print(f"[demo] {message}", flush=True)

    while not server.started:
        time.sleep(0.1)
    make_sample_vm(settings.vms_root)
    guest = boot_live_guest(settings.vms_root, say)
    agent.refresh_inventory()
    client = ApiClient(settings.server_url)
    try:
        if guest is not None:
            result = run_live_demo(client, settings.home, guest, say)
        else:
            result = run_demo(client, settings.home, settings.vms_root, say)
    except Exception as e:  # the server keeps running; say what went wrong
        say(f"failed: {e}")
        return
    finally:
        if guest is not None:  # a QEMU of its own session would outlive the server
            guest.stop()
            say(f"{guest.disk.parent.name} is shut down (it stays a stopped VM: back it up again or restore it)")
    print(_try_these(settings.server_url, result), flush=True)


def _try_these(url: str, result: dict) -> str:
    return f"""
Haven is running at {url}  (stop with Ctrl-C)
Dashboard: {url}/  (sign in with the token in $HAVEN_HOME/credentials.json, ~/.haven by default)
Try:
  .venv/bin/haven vault list -s default
  .venv/bin/haven item list -s default -v vault-local
  .venv/bin/haven recoverypoint list -s default -v vault-local --vm {result['vm']}
  .venv/bin/haven protection backup-now -s default -v vault-local --vm {result['vm']} --wait
  .venv/bin/haven job list -s default -v vault-local
  .venv/bin/haven restore restore-disks -s default -v vault-local --vm {result['vm']} --rp-name {result['point']} --target-folder /tmp/haven-restore --wait
"""


@handled
def demo(ctx: typer.Context, home: Annotated[Optional[Path], typer.Option("--home")] = None):
    """Against a running server: protect the sample VM, back it up, restore it and compare."""
    from haven.config import load_settings
    from haven.demo import run_demo

    settings = load_settings(home)
    result = run_demo(state(ctx).client, settings.home, settings.vms_root)
    state(ctx).show(result)
    if not result["identical"]:
        raise typer.Exit(1)

"""A real HTTP server (uvicorn in a thread) over the test core, for agents that speak HTTP to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from haven.api.app import create_app
from haven.services.core import Haven
from tests.foundation.helpers import make_folder_vm, register_local_host
from tests.services._util import free_port


@pytest.fixture
def served(core: Haven) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(core), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def world(core: Haven, home: Path, owner_token: str):
    """A vault; the server's own host with VM 'near'; a remote host 'far' with VM 'far-vm' and its agent token."""
    root = core.auth.authenticate(owner_token)
    core.subscriptions.create(root, "prod")
    core.vaults.create(root, "prod", "v1", "local")
    make_folder_vm(home / "vms", "near")
    register_local_host(core, home / "vms")
    far_vms = home.parent / "far-vms"
    make_folder_vm(far_vms, "far-vm", size=8 << 20)
    added = core.agents.add_host(root, "far", "local", f"folder://{far_vms}", shares=["prod"])
    return {"root": root, "far_vms": far_vms, "agent_token": added["agent_token"], "far_id": added["id"]}

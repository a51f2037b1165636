"""Test helpers for the foundation: a registered host with image-folder VMs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from haven.services.core import Haven


def make_folder_vm(vms_root: Path, name: str, disks: int = 1, size: int = 4 << 20, data: bytes | None = None) -> Path:
    folder = vms_root / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(disks):
        dname = f"vd{chr(ord('a') + i)}"
        path = folder / f"{dname}.raw"
        with open(path, "wb") as fh:
            fh.truncate(size)
            fh.seek(size // 3)
            fh.write(data if data is not None else os.urandom(64 << 10))
        entries.append({"name": dname, "file": path.name, "format": "raw"})
    (folder / "vm.json").write_text(json.dumps({"name": name, "disks": entries}))
    return folder


def register_local_host(core: Haven, vms_root: Path, name: str = "host1", region: str = "local",
                        share: list[str] | None = None) -> str:
    """Register a host run by the server's own agent and report its VMs.

    Such a host is shared with every subscription by default (``[server] share_own_host``); ``share``
    also shares it with these subscriptions, as 'haven host share' would.
    """
    from haven.agent.local import LocalAgent

    agent = LocalAgent(core, f"folder://{vms_root}", host_name=name, region=region)
    agent.register()
    for sub in share or []:
        core.inventory.share_host(None, name, sub)
    agent.refresh_inventory()
    return agent.host_id


def run_job(core: Haven, job_id: str, attempts: int = 100) -> None:
    """Run the queue in this process until job ``job_id`` has run.

    Fails instead of spinning when the queue runs dry before the job came up."""
    from haven.jobs.runner import JobRunner

    runner = JobRunner(core.queue, core.job_handlers(), on_failure=core.alerts.job_failed)
    for _ in range(attempts):
        ran = runner.run_once()
        if ran == job_id:
            return
        assert ran is not None, f"the queue ran dry before job {job_id} came up"
    raise AssertionError(f"job {job_id} did not come up in {attempts} runs")

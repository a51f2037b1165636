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


def register_local_host(core: Haven, vms_root: Path, name: str = "host1", region: str = "local") -> str:
    from haven.agent.local import LocalAgent

    agent = LocalAgent(core, f"folder://{vms_root}", host_name=name, region=region)
    agent.register()
    agent.refresh_inventory()
    return agent.host_id

"""The embedded default's first run: a sample VM, a vault, a first backup and a restore, checked byte for byte.

``make run`` starts ``haven serve --demo``; this module is what ``--demo`` (and ``haven demo``) does
through the API, exactly as a user would with the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from haven.errors import Conflict

__all__ = ["make_sample_vm", "run_demo", "file_digest"]

SAMPLE_VM = "sample-vm"
DEMO_SUBSCRIPTION = "default"
DEMO_VAULT = "vault-local"


def make_sample_vm(vms_root: Path, name: str = SAMPLE_VM, size_mib: int = 256) -> Path:
    """A stopped image-folder VM: one raw disk holding an ext4 file system with a few files,
    plus some random data and large holes (so the backup shows skipping holes and dedup)."""
    folder = vms_root / name
    disk = folder / "vda.raw"
    if (folder / "vm.json").exists() and disk.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "etc").mkdir()
        (root / "etc" / "hostname").write_text(f"{name}\n")
        (root / "home").mkdir()
        (root / "home" / "notes.txt").write_text("Haven sample VM: this file must survive backup and restore.\n" * 200)
        (root / "home" / "random.bin").write_bytes(os.urandom(4 << 20))
        fs_size = f"{size_mib // 2}M"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "sample", "-d", str(root), str(disk), fs_size], check=True)
    with open(disk, "r+b") as fh:  # grow to the full size as a hole, then a random tail region
        fh.truncate(size_mib << 20)
        fh.seek((size_mib - 16) << 20)
        fh.write(os.urandom(2 << 20))
    definition = {"name": name, "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}],
                  "nics": [{"mac": "52:54:00:00:00:01", "network": "default", "model": "virtio"}], "memory_mib": 256, "vcpus": 1}
    (folder / "vm.json").write_text(json.dumps(definition, indent=2))
    return folder


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wait_job(client, sub: str, job_id: str, timeout: float = 900) -> dict:
    end = time.monotonic() + timeout
    while True:
        job = client.get(f"/subscriptions/{sub}/jobs/{job_id}")
        if job["status"] in ("Completed", "CompletedWithWarnings", "Failed", "Cancelled") or time.monotonic() > end:
            return job
        time.sleep(0.5)


def run_demo(client, home: Path, vms_root: Path, say: Callable[[str], None] = print) -> dict:
    """Subscription → vault → protect the sample VM → back up now → restore disks → compare."""
    sample = make_sample_vm(vms_root)
    for create in (lambda: client.post("/subscriptions", {"name": DEMO_SUBSCRIPTION}),
                   lambda: client.post(f"/subscriptions/{DEMO_SUBSCRIPTION}/vaults", {"name": DEMO_VAULT, "region": "local"})):
        try:
            create()
        except Conflict:
            pass  # second run: already there
    items = f"/subscriptions/{DEMO_SUBSCRIPTION}/vaults/{DEMO_VAULT}/items"
    _wait_for_vm(client, SAMPLE_VM)
    try:
        client.post(items, {"vm": SAMPLE_VM})
        say(f"protection enabled for {SAMPLE_VM} in {DEMO_VAULT} (DefaultPolicy)")
    except Conflict:
        pass
    job = _wait_job(client, DEMO_SUBSCRIPTION, client.post(f"{items}/{SAMPLE_VM}/backup", {})["id"])
    say(f"backup job {job['id']}: {job['status']} {json.dumps(job.get('result', {}))}")
    if job["status"] not in ("Completed", "CompletedWithWarnings"):
        raise RuntimeError(f"demo backup failed: {job.get('error')}")
    point = job["result"]["recovery_point_id"]
    target = home / "restores" / f"{SAMPLE_VM}-{point[:8]}"
    if target.exists():
        shutil.rmtree(target)
    restore = client.post(f"{items}/{SAMPLE_VM}/recovery-points/{point}/restore-disks", {"target": str(target)})
    restore = _wait_job(client, DEMO_SUBSCRIPTION, restore["id"])
    say(f"restore job {restore['id']}: {restore['status']} into {target}")
    same = file_digest(sample / "vda.raw") == file_digest(target / "vda.raw")
    say("restored disk is byte-identical to the original" if same else "RESTORED DISK DIFFERS FROM THE ORIGINAL")
    return {"backup_job": job["id"], "restore_job": restore["id"], "point": point, "identical": same, "target": str(target)}


def _wait_for_vm(client, name: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(v["name"] == name for v in client.get("/vms")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the local agent did not report {name} within {timeout}s")

"""The embedded default's first run: a VM, a vault, a first backup and a restore, checked.

``make run`` starts ``haven serve --demo``; this module is what ``--demo`` (and ``haven demo``) does
through the API, exactly as a user would with the CLI. Where QEMU runs and the project's test guest can be
built (``haven.testguest``: Debian packages, 10-20 s once, then cached), ``--demo`` boots it as an image-folder
VM, writes a file inside it through its guest agent, backs the running guest up, restores its disk and reads
the file back from it (``run_live_demo``). Elsewhere the stopped, disk-only sample VM is backed up and its
restored disk compared byte for byte (``run_demo``), and the demo says why.
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
from typing import TYPE_CHECKING, Callable

from haven.errors import Conflict

if TYPE_CHECKING:
    from haven.testguest import RunningGuest

__all__ = ["make_sample_vm", "run_demo", "file_digest", "boot_live_guest", "run_live_demo", "LIVE_VM"]

SAMPLE_VM = "sample-vm"
LIVE_VM = "live-vm"
LIVE_FILE = "/root/haven-demo.txt"
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
    job, restore, point, target = _protect_backup_restore(client, home, SAMPLE_VM, say)
    same = file_digest(sample / "vda.raw") == file_digest(target / "vda.raw")
    say("restored disk is byte-identical to the original" if same else "RESTORED DISK DIFFERS FROM THE ORIGINAL")
    return {"vm": SAMPLE_VM, "backup_job": job["id"], "restore_job": restore["id"], "point": point, "identical": same,
            "target": str(target)}


def boot_live_guest(vms_root: Path, say: Callable[[str], None] = print) -> "RunningGuest | None":
    """Boot the project's test guest as the image-folder VM ``live-vm`` (QMP and guest-agent sockets in its
    folder) and wait for its guest agent; None, with the reason said, where that cannot be done here."""
    from haven import testguest

    ok, why = testguest.qemu_available()
    if not ok:
        say(f"no running guest for the demo ({why}): backing up the disk-only sample VM instead")
        return None
    try:
        images = testguest.ensure_images()
        folder = vms_root / LIVE_VM
        if not (folder / "vm.json").exists():
            testguest.new_disk(images, folder / "vda.qcow2")
            definition = {"name": LIVE_VM, "disks": [{"name": "vda", "file": "vda.qcow2", "format": "qcow2"}],
                          "nics": [{"mac": "52:54:00:00:00:02", "network": "default", "model": "virtio"}],
                          "memory_mib": 256, "vcpus": 1, "qmp_socket": "run/qmp.sock", "qga_socket": "run/qga.sock"}
            (folder / "vm.json").write_text(json.dumps(definition, indent=2))
        say(f"booting the test guest as {LIVE_VM} under QEMU (TCG) …")
        guest = testguest.boot(images, folder / "vda.qcow2", folder / "run")
    except Exception as e:  # no Debian archive, no QEMU that starts: the sample VM still shows a backup
        say(f"no running guest for the demo (the test guest could not be built or booted: {e}): "
            "backing up the disk-only sample VM instead")
        return None
    try:
        say(f"{LIVE_VM}'s guest agent answered after {guest.wait_for_agent(180):.0f} s")
    except Exception as e:
        guest.kill()
        say(f"no running guest for the demo ({e}): backing up the disk-only sample VM instead")
        return None
    return guest


def run_live_demo(client, home: Path, guest: "RunningGuest", say: Callable[[str], None] = print) -> dict:
    """Write a file inside the running guest through its guest agent → back the running VM up → restore its
    disk → read the file back from the restored disk."""
    from haven.testguest import fs_cat

    content = f"written inside the running {LIVE_VM} at {time.strftime('%H:%M:%S')}: {os.urandom(8).hex()}\n"
    guest.shell(f"printf '%s' '{content}' > {LIVE_FILE} && sync")
    say(f"wrote {LIVE_FILE} inside {LIVE_VM} through its guest agent: {content.strip()}")
    job, restore, point, target = _protect_backup_restore(client, home, LIVE_VM, say)
    raw = target / "vda.raw"
    back = fs_cat(raw, LIVE_FILE) if raw.exists() else None
    same = back == content.encode()
    say(f"read {LIVE_FILE} back from the restored disk {raw}: {back.decode(errors='replace').strip() if back else '(missing)'}")
    say("the file written in the running guest came back from the restore" if same else "THE RESTORED FILE DIFFERS")
    return {"vm": LIVE_VM, "backup_job": job["id"], "restore_job": restore["id"], "point": point, "identical": same,
            "target": str(target), "consistency": job.get("result", {}).get("consistency")}


def _protect_backup_restore(client, home: Path, vm: str, say: Callable[[str], None]) -> tuple[dict, dict, str, Path]:
    for create in (lambda: client.post("/subscriptions", {"name": DEMO_SUBSCRIPTION}),
                   lambda: client.post(f"/subscriptions/{DEMO_SUBSCRIPTION}/vaults", {"name": DEMO_VAULT, "region": "local"})):
        try:
            create()
        except Conflict:
            pass  # second run: already there
    items = f"/subscriptions/{DEMO_SUBSCRIPTION}/vaults/{DEMO_VAULT}/items"
    _wait_for_vm(client, vm)
    try:
        client.post(items, {"vm": vm})
        say(f"protection enabled for {vm} in {DEMO_VAULT} (DefaultPolicy)")
    except Conflict:
        pass
    job = _wait_job(client, DEMO_SUBSCRIPTION, client.post(f"{items}/{vm}/backup", {})["id"])
    say(f"backup job {job['id']}: {job['status']} {json.dumps(job.get('result', {}))}")
    if job["status"] not in ("Completed", "CompletedWithWarnings"):
        raise RuntimeError(f"demo backup failed: {job.get('error')}")
    point = job["result"]["recovery_point_id"]
    target = home / "restores" / f"{vm}-{point[:8]}"
    if target.exists():
        shutil.rmtree(target)
    restore = client.post(f"{items}/{vm}/recovery-points/{point}/restore-disks", {"target": str(target)})
    restore = _wait_job(client, DEMO_SUBSCRIPTION, restore["id"])
    say(f"restore job {restore['id']}: {restore['status']} into {target}")
    return job, restore, point, target


def _wait_for_vm(client, name: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(v["name"] == name for v in client.get("/vms")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the local agent did not report {name} within {timeout}s")

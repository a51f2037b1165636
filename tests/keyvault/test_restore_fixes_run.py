"""Seed 003's restore errors, driven through the CLI against a real ``haven serve`` with an encrypted
(LUKS, BEK + KEK) image-folder VM: each error's fix is taken from the failed job and its commands are run
exactly as printed, in a shell, after which the restore completes and the disk comes back byte for byte.
Rows 2 (key vault gone), 3 (keys and secrets gone) and 4 (restore-vm: the backup service may not use the
keys, so restore the disks instead)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services._util import require_binary
from tests.services.haven_server import HavenServer, run_cli

KV, SUB, VAULT, VM = "kv-disks", "prod", "v1", "enc1"
ENC = {"method": "luks", "key_vault": KV, "bek_secret": "enc1-bek", "kek_key": "enc1-kek"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cryptsetup = require_binary("cryptsetup")
    home = tmp_path_factory.mktemp("haven-enc")
    folder = home / "vms" / VM
    folder.mkdir(parents=True)
    key = home / "luks.key"
    key.write_bytes(os.urandom(64))
    with open(folder / "vda.raw", "wb") as fh:
        fh.truncate(24 << 20)
    subprocess.run([cryptsetup, "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                    "--key-file", str(key), str(folder / "vda.raw")], check=True, capture_output=True)
    (folder / "vm.json").write_text(json.dumps({"name": VM, "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}],
                                                "encryption": ENC}))
    server = HavenServer(home).start()
    try:
        run_cli(server, "subscription", "create", "--name", SUB)
        run_cli(server, "vault", "create", "-s", SUB, "--name", VAULT, "--region", "local")
        _make_keys(server, key)
        run_cli(server, "protection", "enable-for-vm", "-s", SUB, "-v", VAULT, "--vm", VM)
        job = run_cli(server, "protection", "backup-now", "-s", SUB, "-v", VAULT, "--vm", VM)
        assert _wait(server, job["id"])["status"].startswith("Completed")
        point = run_cli(server, "recoverypoint", "list", "-s", SUB, "-v", VAULT, "--vm", VM)[0]["id"]
        bin_dir = home / "bin"  # `haven` as a user has it on PATH: this tree's CLI
        bin_dir.mkdir()
        (bin_dir / "haven").write_text(f"#!/bin/sh\nexec {sys.executable} -m haven.cli.main \"$@\"\n")
        (bin_dir / "haven").chmod(0o755)
        yield {"server": server, "point": point, "disk": (folder / "vda.raw").read_bytes(), "home": home, "bin": bin_dir}
    finally:
        server.stop()


def _make_keys(server, key: Path) -> None:
    run_cli(server, "keyvault", "create", "-s", SUB, "--name", KV, "--region", "local")
    run_cli(server, "keyvault", "key", "create", "-s", SUB, "--vault-name", KV, "--name", "enc1-kek")
    wrapped = run_cli(server, "keyvault", "key", "wrap", "-s", SUB, "--vault-name", KV, "--name", "enc1-kek", "--file", str(key))
    run_cli(server, "keyvault", "secret", "set", "-s", SUB, "--vault-name", KV, "--name", "enc1-bek", "--value", wrapped["value"],
            "--tags", json.dumps({"kek": wrapped["kid"], "alg": wrapped.get("alg", "RSA-OAEP-256")}))
    run_cli(server, "keyvault", "set-policy", "-s", SUB, "--name", KV, "--principal", "Backup Management Service",
            "--template", "Haven Backup")


def _wait(server, job_id: str, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    with httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {server.token}"}, timeout=30) as c:
        while True:
            job = c.get(f"/subscriptions/{SUB}/jobs/{job_id}").json()
            if job["status"] in ("Completed", "CompletedWithWarnings", "Failed", "Cancelled"):
                return job
            assert time.monotonic() < end, job
            time.sleep(0.3)


def _restore_disks(world, target: Path) -> dict:
    job = run_cli(world["server"], "restore", "restore-disks", "-s", SUB, "-v", VAULT, "--vm", VM, "--rp-name", world["point"],
                  "--target-folder", str(target))
    return _wait(world["server"], job["id"])


def _run_as_printed(world, command: str) -> None:
    env = {**world["server"].cli_env(), "PATH": f"{world['bin']}:{os.environ['PATH']}", "HOME": str(world["home"]),
           "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (command, done.stdout[-1500:], done.stderr[-1500:])


def _commands(fix: str) -> list[str]:
    found = re.findall(r"'(haven [^']+)'", fix)
    assert found and all("<" not in c and "{" not in c for c in found), fix  # nothing left to fill in
    return found


def test_row3_keys_gone_the_printed_fix_brings_them_back(world, tmp_path):
    server = world["server"]
    run_cli(server, "keyvault", "key", "delete", "-s", SUB, "--vault-name", KV, "--name", "enc1-kek")
    run_cli(server, "keyvault", "secret", "delete", "-s", SUB, "--vault-name", KV, "--name", "enc1-bek")
    failed = _restore_disks(world, tmp_path / "r3-a")
    assert failed["status"] == "Failed" and failed["error"]["code"] == "UserErrorKeysAndSecretsNotFoundForRestore"
    for command in _commands(failed["error"]["recommendation"]):
        _run_as_printed(world, command)
    done = _restore_disks(world, tmp_path / "r3-b")
    assert done["status"].startswith("Completed"), done
    assert (tmp_path / "r3-b" / "vda.raw").read_bytes() == world["disk"]


def test_row4_restore_vm_without_the_services_access_points_to_restore_disks_which_runs(world, tmp_path):
    server = world["server"]
    job = run_cli(server, "restore", "restore-vm", "-s", SUB, "-v", VAULT, "--vm", VM, "--rp-name", world["point"],
                  "--target-vm-name", "enc1-copy")
    failed = _wait(server, job["id"])
    assert failed["status"] == "Failed" and failed["error"]["code"] == "UserErrorBackupServiceNoAccessToSubscription"
    assert not any(v["name"] == "enc1-copy" for v in run_cli(server, "vm", "list"))  # no VM was created
    (command,) = _commands(failed["error"]["recommendation"])
    assert command.startswith("haven restore restore-disks")
    _run_as_printed(world, command)
    restored = world["home"] / f"{VM}-restored" / "vda.raw"
    assert restored.read_bytes() == world["disk"]


def test_row2_key_vault_gone_the_printed_fix_recreates_it_and_brings_the_keys_back(world, tmp_path):
    server = world["server"]
    run_cli(server, "keyvault", "delete", "-s", SUB, "--name", KV)
    run_cli(server, "keyvault", "purge", "-s", SUB, "--name", KV)
    failed = _restore_disks(world, tmp_path / "r2-a")
    assert failed["status"] == "Failed" and failed["error"]["code"] == "UserErrorKeyVaultNotFoundForRestore"
    commands = _commands(failed["error"]["recommendation"])
    create, recover, *restores = commands
    assert create.startswith("haven keyvault create") and recover.startswith("haven keyvault recover")
    for command in [create, *restores]:  # the key vault was purged: create it (recover is the other way)
        _run_as_printed(world, command)
    done = _restore_disks(world, tmp_path / "r2-b")
    assert done["status"].startswith("Completed"), done
    assert (tmp_path / "r2-b" / "vda.raw").read_bytes() == world["disk"]

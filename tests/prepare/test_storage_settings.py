"""Per-region object-storage settings in haven.toml (issue 23): S3 (rclone's signature-checking server) and Azure
Blob (Azurite) with their secrets in a file or an environment variable, through a real `haven serve` and the CLI:
backups and restores byte for byte; a wrong or missing secret is a typed error from `prepare check` and from a
backup, and no secret is ever printed, logged or answered."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from haven.config import StorageSettingInvalid, load_settings
from tests.restore.conftest import make_vm, same_bytes
from tests.services.azurite import ACCOUNT, ACCOUNT_KEY
from tests.services.haven_server import HavenServer, run_cli as run

V = ["-s", "prod", "-v", "v1"]
WRONG_S3 = "not-the-secret-" + uuid.uuid4().hex
WRONG_AZURE = "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nV3Jvbmc" + "xMjM0NTY3ODkwYWJjZGVmZ2hpams="  # base64, not the key


def _toml(home: Path, region: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "haven.toml").write_text(region)


def _secret(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _everything(server: HavenServer, *outputs) -> str:
    """Every text a user or an operator can see: CLI outputs given, and the server's log."""
    return "\n".join([*(o if isinstance(o, str) else json.dumps(o) for o in outputs), (server.home / "server.log").read_text()])


# ---- the settings themselves ----


def test_a_secret_written_in_haven_toml_is_refused_without_echoing_it(tmp_path):
    _toml(tmp_path, '[[regions]]\nname = "east"\nstorage_url = "s3://b"\n[regions.storage]\naccess_key_id = "k"\n'
                    'secret_access_key = "hunter2-inline"\n')
    with pytest.raises(StorageSettingInvalid) as info:
        load_settings(tmp_path)
    err = info.value
    assert err.code == "UserErrorStorageSettingInvalid" and "secret_access_key_file" in err.text and "east" in err.text
    assert "hunter2-inline" not in json.dumps(err.to_payload())


@pytest.mark.parametrize("storage, key", [
    ('access_key_id = "k"\nsecret_access_key_file = "/x"\nsecret_access_key_env = "X"', "secret_access_key"),
    ('addressing_style = "sideways"', "addressing_style"),
    ('endpoint_url = "ftp://x"', "endpoint_url"),
    ('access_key_id = "k"', "access_key_id"),
    ('connection_string_file = "/x"', "connection_string_file"),
    ('bucket_name = "x"', "bucket_name"),
])
def test_invalid_s3_settings_are_typed_errors(tmp_path, storage, key):
    _toml(tmp_path, f'[[regions]]\nname = "east"\nstorage_url = "s3://b"\n[regions.storage]\n{storage}\n')
    with pytest.raises(StorageSettingInvalid) as info:
        load_settings(tmp_path)
    assert key in info.value.text and "docs/guides/object-storage.md" in info.value.fix


def test_settings_resolve_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from haven.transport.credentials import storage_options

    _toml(tmp_path, '[[regions]]\nname = "east"\nstorage_url = "s3://b/p"\n[regions.storage]\nendpoint_url = "http://s3.test:9000"\n'
                    'region = "eu-1"\naddressing_style = "virtual"\naccess_key_id = "AK"\n'
                    f'secret_access_key_file = "{tmp_path / "s3.secret"}"\n'
                    '[[regions]]\nname = "west"\nstorage_url = "azure://c"\n[regions.storage]\nconnection_string_env = "WEST_CS"\n')
    settings = load_settings(tmp_path)
    east, west = settings.region("east").storage, settings.region("west").storage
    assert east.describe() == {"endpoint_url": "http://s3.test:9000", "region": "eu-1", "addressing_style": "virtual",
                               "access_key_id": "AK", "secret_access_key": f"file {tmp_path / 's3.secret'}"}
    assert west.describe() == {"connection_string": "environment variable WEST_CS"}
    _secret(tmp_path / "s3.secret", "s3-secret-value")
    opts = storage_options(east, env={})
    assert (opts["endpoint_url"], opts["region"], opts["addressing_style"], opts["access_key"], opts["secret_key"]) == (
        "http://s3.test:9000", "eu-1", "virtual", "AK", "s3-secret-value")
    assert "s3-secret-value" not in json.dumps(east.describe()) and "s3.secret" in json.dumps(east.describe())
    assert storage_options(west, env={"WEST_CS": "DefaultEndpointsProtocol=http;AccountName=a"})["connection_string"].startswith("Default")
    from haven.transport.errors import StorageSecretUnreadable

    with pytest.raises(StorageSecretUnreadable) as info:
        storage_options(west, env={})
    assert info.value.code == "UserErrorStorageSecretUnreadable" and "WEST_CS" in info.value.text


# ---- through a real server and the CLI ----


@pytest.fixture
def s3_home(tmp_path, s3_server):
    home = tmp_path / "srv"
    secret = _secret(tmp_path / "s3.secret", s3_server["secret_key"])
    _toml(home, f'[[regions]]\nname = "local"\nstorage_url = "s3://haven-{uuid.uuid4().hex[:12]}/vaults"\n'
                f'[regions.storage]\nendpoint_url = "{s3_server["endpoint_url"]}"\nregion = "us-east-1"\naddressing_style = "path"\n'
                f'access_key_id = "{s3_server["access_key"]}"\nsecret_access_key_file = "{secret}"\n')
    return home, Path(secret)


@pytest.fixture
def azure_home(tmp_path, azurite):
    home = tmp_path / "srv"
    endpoint = next(p.split("=", 1)[1] for p in azurite.split(";") if p.startswith("BlobEndpoint="))
    secret = _secret(tmp_path / "azure.key", ACCOUNT_KEY)
    _toml(home, f'[[regions]]\nname = "local"\nstorage_url = "azure://haven-{uuid.uuid4().hex[:12]}"\n'
                f'[regions.storage]\nendpoint_url = "{endpoint}"\naccount_name = "{ACCOUNT}"\naccount_key_file = "{secret}"\n')
    return home, Path(secret)


def _server(home: Path) -> HavenServer:
    # no AWS_* / AZURE_* in the server's environment: the settings are the only credentials it has
    clean = {k: "" for k in os.environ if k.startswith(("AWS_", "AZURE_"))}
    return HavenServer(home, env=clean).start()


@pytest.mark.parametrize("kind, right, wrong", [("s3", None, WRONG_S3), ("azure", ACCOUNT_KEY, WRONG_AZURE)],
                         ids=["s3", "azure"])
def test_backup_and_restore_with_credentials_from_a_file_and_a_wrong_secret_is_typed(request, tmp_path, kind, right, wrong):
    home, secret_file = request.getfixturevalue(f"{kind}_home")
    right = right or secret_file.read_text().strip()
    make_vm(home / "vms", "web1", {"vda": (3 << 20) + 4096})
    server = _server(home)
    try:
        run(server, "subscription", "create", "--name", "prod")
        run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
        check = run(server, "prepare", "check", "-s", "prod", "--vm", "web1")
        checks = {c["check"]: c for c in check["checks"]}
        assert checks["storage-credentials"]["status"] == "pass" and str(secret_file) in checks["storage-credentials"]["reason"]
        assert checks["storage-connectivity"]["status"] == "pass", checks["storage-connectivity"]
        run(server, "protection", "enable-for-vm", *V, "--vm", "web1")
        job = run(server, "protection", "backup-now", *V, "--vm", "web1", "--wait")
        assert job["status"] in ("Completed", "CompletedWithWarnings"), job
        point = run(server, "recoverypoint", "list", *V, "--vm", "web1")[0]["id"]
        target = tmp_path / "restored"
        job = run(server, "restore", "restore-disks", *V, "--vm", "web1", "-r", point, "--target-folder", str(target), "--wait")
        assert job["status"] == "Completed", job
        assert same_bytes(target / "vda.raw", home / "vms" / "web1" / "vda.raw")

        _secret(secret_file, wrong)  # rotated to a wrong value: read again at the next use, no restart
        bad = run(server, "prepare", "check", "-s", "prod", "--vm", "web1", expect=7)
        assert "UserErrorStorageCredentialsRejected" in bad.output and "[regions.storage]" in bad.output, bad.output
        assert str(secret_file) in bad.output
        failed = run(server, "protection", "backup-now", *V, "--vm", "web1", "--wait", expect=1)  # a failed job: exit 1
        job = json.loads(failed.stdout)
        assert job["status"] == "Failed" and job["error"]["code"] == "UserErrorStorageCredentialsRejected", job
        assert "[regions.storage]" in job["error"]["recommendation"]
        assert len(run(server, "recoverypoint", "list", *V, "--vm", "web1")) == 1  # nothing recorded
        seen = _everything(server, check, bad.output, failed.output)
        assert right not in seen and wrong not in seen

        secret_file.unlink()  # missing: typed, naming the file
        gone = run(server, "prepare", "check", "-s", "prod", "--vm", "web1", expect=7)
        assert "UserErrorStorageSecretUnreadable" in gone.output and str(secret_file) in gone.output, gone.output
        assert right not in _everything(server, gone.output)
    finally:
        server.stop()


def test_a_secret_in_an_environment_variable_is_used_and_never_shown(tmp_path, s3_server):
    home = tmp_path / "srv"
    _toml(home, f'[[regions]]\nname = "local"\nstorage_url = "s3://haven-{uuid.uuid4().hex[:12]}"\n'
                f'[regions.storage]\nendpoint_url = "{s3_server["endpoint_url"]}"\naccess_key_id = "{s3_server["access_key"]}"\n'
                'secret_access_key_env = "HAVEN_TEST_S3_SECRET"\n')
    make_vm(home / "vms", "web1", {"vda": 1 << 20})
    server = HavenServer(home, env={"HAVEN_TEST_S3_SECRET": s3_server["secret_key"]}).start()
    try:
        run(server, "subscription", "create", "--name", "prod")
        run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
        check = run(server, "prepare", "check", "-s", "prod", "--vm", "web1")
        creds = {c["check"]: c for c in check["checks"]}["storage-credentials"]
        assert creds["status"] == "pass" and "HAVEN_TEST_S3_SECRET" in creds["reason"]
        assert s3_server["secret_key"] not in _everything(server, check)
    finally:
        server.stop()


# ---- remote agents: the credentials go with the job, to the agent that holds it ----


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_direct_vaults_credentials_go_only_with_a_claimed_job(core, home, owner_token, s3_server, tmp_path):
    """The claim answer of a job on an S3 vault carries the region's endpoint and credentials; the probe targets never
    do, and the agent of another host gets nothing of the job (it cannot claim it)."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from haven.api.app import create_app
    from haven.config import RegionConfig, region_storage
    from tests.foundation.helpers import make_folder_vm

    secret = _secret(tmp_path / "s3.secret", s3_server["secret_key"])
    raw = {"name": "local", "storage_url": f"s3://haven-{uuid.uuid4().hex[:12]}",
           "storage": {"endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key"],
                       "secret_access_key_file": secret}}
    region = RegionConfig("local", raw["storage_url"], storage=region_storage(raw, home / "haven.toml"))
    object.__setattr__(core, "settings", replace(core.settings, regions=(region, *core.settings.regions[1:])))
    root = core.auth.authenticate(owner_token)
    core.subscriptions.create(root, "prod")
    core.vaults.create(root, "prod", "v1", "local")
    far_vms, near_vms = tmp_path / "far-vms", tmp_path / "other-vms"
    make_folder_vm(far_vms, "far-vm")
    far = core.agents.add_host(root, "far", "local", f"folder://{far_vms}", shares=["prod"])
    other = core.agents.add_host(root, "other", "local", f"folder://{near_vms}", shares=["prod"])
    client = TestClient(create_app(core))

    def as_(token):
        return {"Authorization": f"Bearer {token}"}

    for token in (far["agent_token"], other["agent_token"]):
        assert client.post("/api/v1/agent/hello", json={"adapter": "folder:///x", "version": "1", "job_types": ["Backup"]},
                           headers=as_(token)).status_code == 200
    assert client.put("/api/v1/agent/vms", json={"vms": [{"name": "far-vm", "power_state": "stopped", "disks": []}]},
                      headers=as_(far["agent_token"])).status_code == 200
    targets = client.get("/api/v1/agent/storage-targets", headers=as_(far["agent_token"])).json()
    assert targets and s3_server["secret_key"] not in json.dumps(targets)
    core.protection.enable(root, "prod", "v1", "far-vm")
    core.protection.backup_now(root, "prod", "v1", "far-vm")
    stolen = client.post("/api/v1/agent/jobs/claim", json={"worker": "w1", "types": ["Backup"]}, headers=as_(other["agent_token"]))
    assert stolen.status_code == 204 and s3_server["secret_key"] not in stolen.text
    claim = client.post("/api/v1/agent/jobs/claim", json={"worker": "w1", "types": ["Backup"]}, headers=as_(far["agent_token"]))
    assert claim.status_code == 200, claim.text
    storage = claim.json()["storage"]
    assert storage["kind"] == "direct" and storage["options"]["secret_key"] == s3_server["secret_key"]
    assert storage["options"]["endpoint_url"] == s3_server["endpoint_url"] and storage["options"]["access_key"] == s3_server["access_key"]

    # prepare check for the remote host's VM: the server asks the storage with the region's settings itself
    checks = {c["check"]: c for c in core.prepare.check(root, "prod", "far-vm", timeout=5)["checks"]}
    assert checks["storage-credentials"]["status"] == "pass" and "answered the server's request" in checks["storage-credentials"]["reason"]
    _secret(Path(secret), WRONG_S3)
    result = core.prepare.check(root, "prod", "far-vm", timeout=5)
    creds = {c["check"]: c for c in result["checks"]}["storage-credentials"]
    assert creds["status"] == "fail" and creds["code"] == "UserErrorStorageCredentialsRejected" and not result["ok"], creds
    assert WRONG_S3 not in json.dumps(result) and s3_server["secret_key"] not in json.dumps(result)


def test_an_error_that_quotes_a_secret_is_scrubbed(tmp_path, monkeypatch):
    """Whatever an SDK puts in its error text, a secret given to the host's backend never leaves in a Haven error."""
    from haven.engine import azure as azure_backend
    from haven.engine.errors import StorageUnavailable
    from haven.transport import open_agent_backend

    secret = "QWNjb3VudEtleQ" + uuid.uuid4().hex + "=="
    connection = f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey={secret};BlobEndpoint=http://127.0.0.1:9/a;"

    def leaky_load(self, name):  # an SDK that quotes the connection string in its error
        raise StorageUnavailable(detail=f"bad request with {connection}")

    monkeypatch.setattr(azure_backend.AzureBackend, "load", leaky_load)
    backend = open_agent_backend("azure://c", {"connection_string": connection, "retry": False}, home=tmp_path)
    with pytest.raises(StorageUnavailable) as info:
        backend.load("config")
    assert secret not in json.dumps(info.value.to_payload()) and "***" in info.value.text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_s3_credentials_are_a_typed_error_not_a_retried_outage(tmp_path, s3_server):
    """Before: 'Unable to locate credentials' was StorageErrorBackendUnavailable (transient, retried, 'check the network')."""
    home = tmp_path / "srv"
    _toml(home, f'[[regions]]\nname = "local"\nstorage_url = "s3://haven-{uuid.uuid4().hex[:12]}"\n'
                f'[regions.storage]\nendpoint_url = "{s3_server["endpoint_url"]}"\n')
    env = {k: "" for k in os.environ if k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")  # no instance-metadata look-up on a test machine
    server = HavenServer(home, env=env).start()
    try:
        run(server, "subscription", "create", "--name", "prod")
        refused = run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local", expect=7)
        assert "UserErrorStorageCredentialsMissing" in refused.output and "secret_access_key_file" in refused.output, refused.output
        assert run(server, "vault", "list", "-s", "prod") == []
    finally:
        server.stop()

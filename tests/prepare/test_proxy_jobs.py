"""A real backup job of a folder VM through the host agent's proxy: it succeeds through squid with
credentials; with a proxy demanding credentials, or a dead proxy, the job fails cleanly with the
typed error and no recovery point is recorded (neither in the database nor in the vault's storage)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from haven.config import RegionConfig
from haven.db.models import RecoveryPoint
from haven.jobs.runner import JobRunner
from tests.foundation.helpers import make_folder_vm, register_local_host

from .conftest import write_conf


@pytest.fixture
def owner(core, owner_token):
    return core.auth.authenticate(owner_token)


@pytest.fixture
def s3_vault(core, owner, home, s3_server, db_url):
    bucket = f"jobs{abs(hash(db_url)) % 10**8}"
    regions = (RegionConfig("local", f"s3://{bucket}"), *core.settings.regions[1:])
    object.__setattr__(core, "settings", replace(core.settings, regions=regions))
    core.storage.backend_options = {"s3": {**s3_server, "retry_attempts": 2}}
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-s3", "local")
    make_folder_vm(home / "vms", "web1", disks=2, size=2 << 20)
    host_id = register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v-s3", "web1")
    return host_id


def _backup(core, owner, host_id) -> dict:
    job = core.protection.backup_now(owner, "prod", "v-s3", "web1")
    runner = JobRunner(core.queue, core.job_handlers(), workers=1, host_id=host_id)
    assert runner.run_once() == job["id"]
    return core.jobs.show(owner, "prod", job["id"])


def _points(core) -> int:
    with core.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(RecoveryPoint)) or 0)


def _stored_points(core) -> list:
    with core.db.session() as s:
        from haven.db.models import Vault
        vault = s.scalar(select(Vault))
    repo = core.storage.open(vault)
    return [(i, p.point_id) for i in repo.list_items() for p in repo.list_points(i)]


def test_backup_job_through_proxy_and_clean_failures(core, owner, home, s3_vault, squid_auth, dead_port):
    # 1. the proxy demands credentials: the job fails with the typed error, nothing recorded
    write_conf(home, f"HttpProxy.Host={squid_auth.host}\nHttpProxy.Port={squid_auth.port}\n")
    job = _backup(core, owner, s3_vault)
    assert job["status"] == "Failed", job
    assert job["error"]["code"] == "UserErrorProxyAuthenticationRequired"
    assert "the proxy requires authentication: check the credentials in the agent configuration" in job["error"]["message"].lower()
    assert _points(core) == 0
    # 2. the proxy is down: the job fails naming the proxy, nothing recorded
    write_conf(home, f"HttpProxy.Host=127.0.0.1\nHttpProxy.Port={dead_port}\n")
    job = _backup(core, owner, s3_vault)
    assert job["status"] == "Failed" and job["error"]["code"] == "TransientErrorProxyUnreachable", job
    assert f"127.0.0.1:{dead_port}" in job["error"]["message"]
    assert _points(core) == 0
    # 3. with the credentials the same job succeeds, through the proxy
    write_conf(home, f"HttpProxy.Host={squid_auth.host}\nHttpProxy.Port={squid_auth.port}\n"
                     f"HttpProxy.User={squid_auth.user}\nHttpProxy.Password={squid_auth.password}\n")
    job = _backup(core, owner, s3_vault)
    assert job["status"] in ("Completed", "CompletedWithWarnings"), job
    assert _points(core) == 1
    write_conf(home, "")  # direct again: the vault holds exactly the one point
    assert len(_stored_points(core)) == 1

"""``haven prepare check``: each prerequisite broken on purpose gives the right verdict, reason and fix.

The guest facts here are what a host agent would report, given by hand: these are unit tests of the rules
that judge them (``probe=False``: the check judges the facts last reported). The same rules on facts a real
guest agent reports, through a real ``haven serve`` and the CLI, are in ``tests/hypervisor/test_real_guest.py``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from haven.cli.main import app as cli_app
from haven.services.prepare import PrepareService
from tests.foundation.helpers import make_folder_vm, register_local_host

from .conftest import write_conf

LINUX = {"id": "debian", "name": "Debian GNU/Linux", "pretty-name": "Debian GNU/Linux 12 (bookworm)", "version-id": "12",
         "kernel-release": "6.1.0-13-amd64", "machine": "x86_64"}
WIN2003 = {"id": "mswindows", "name": "Microsoft Windows", "pretty-name": "Windows Server 2003 R2 Standard",
           "version-id": "2003r2", "kernel-version": "5.2", "kernel-release": "3790", "variant": "server"}
WIN2008R2 = {"id": "mswindows", "name": "Microsoft Windows", "pretty-name": "Windows Server 2008 R2 Datacenter",
             "version-id": "2008r2", "kernel-version": "6.1", "kernel-release": "7601", "variant": "server"}
COMMANDS = ["guest-exec", "guest-file-open", "guest-file-write", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]


def agent(version: str | None = "8.0.0", present=True, answering=True, os=LINUX, problem=None) -> dict:
    return {"present": present, "answering": answering, "version": version, "minimum_version": "2.10.0",
            "version_ok": None, "os": os if answering else {}, "supported_commands": COMMANDS if answering else [],
            "problem_code": problem[0] if problem else None, "problem": problem[1] if problem else None,
            "recommendation": problem[2] if problem else None}


def report(core, host_id: str, name: str, power_state: str = "running", guest_agent: dict | None = None, disks: int = 1,
           nics: list | None = None) -> None:
    """What a host agent reports for a VM (the adapter's VmInfo.to_dict())."""
    info = {"name": name, "uuid": f"uuid-{name}", "power_state": power_state, "nics": nics or [],
            "disks": [{"name": f"vd{i}", "path": f"/x/{name}/vd{i}.raw", "format": "raw", "size": 1 << 20} for i in range(disks)],
            "guest_agent": guest_agent if guest_agent is not None else agent()}
    with core.db.session() as s:
        from sqlalchemy import select

        from haven.db.models import VirtualMachine
        known = [vm.to_dict() if hasattr(vm, "to_dict") else vm.info for vm in s.scalars(select(VirtualMachine).where(VirtualMachine.host_id == host_id))]
    others = [k for k in known if k and k.get("name") != name]
    core.inventory.report_vms(None, host_id, [*others, info])


@pytest.fixture
def owner(core, owner_token):
    return core.auth.authenticate(owner_token)


@pytest.fixture
def world(core, owner, home):
    """Subscription 'prod', vault 'v-local' in region 'local', a registered host with VM 'web1' (healthy, running)."""
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-local", "local")
    make_folder_vm(home / "vms", "web1")
    host_id = register_local_host(core, home / "vms")
    report(core, host_id, "web1")
    return host_id


def by_check(result: dict) -> dict:
    return {c["check"]: c for c in result["checks"]}


def run_check(core, owner, vm="web1", probe=False, **kw) -> tuple[dict, dict]:
    result = PrepareService(core).check(owner, "prod", vm, probe=probe, **kw)
    return result, by_check(result)


def test_everything_ready_passes(core, owner, world):
    result, checks = run_check(core, owner)
    assert result["verdict"] == "pass" and result["ok"] and result["vault"] == "v-local", result
    assert [c["check"] for c in result["checks"]] == ["vault", "guest-agent", "guest-agent-version", "backup-extension",
                                                     "support:data-disks", "support:guest-os", "agent-proxy", "storage-connectivity"]
    assert all(c["status"] == "pass" for c in result["checks"])
    assert "directly" in checks["agent-proxy"]["reason"]
    assert checks["storage-connectivity"]["details"]["steps"][-1]["step"] == "request"


def test_no_vault_in_the_region_fails_with_the_fix(core, owner, world):
    core.vaults.delete(owner, "prod", "v-local")
    core.vaults.create(owner, "prod", "v-paired", "paired")
    result, checks = run_check(core, owner)
    v = checks["vault"]
    assert result["verdict"] == "fail" and not result["ok"] and v["status"] == "fail"
    assert v["code"] == "UserErrorNoVaultInRegion" and "'local'" in v["reason"] and "paired" in v["reason"]
    assert "haven vault create -s prod --name <name> --region local" in v["fix"]
    assert checks["storage-connectivity"]["status"] == "warn"  # nothing to check against
    # naming a vault of another region: the seeds' rule, vault and VM in the same region
    _, checks = run_check(core, owner, vault="v-paired")
    assert checks["vault"]["status"] == "fail" and checks["vault"]["code"] == "UserErrorVmNotInVaultRegion"
    _, checks = run_check(core, owner, vault="nope")
    assert checks["vault"]["code"] == "UserErrorVaultNotFound"


def test_several_vaults_in_the_region_warns_and_shows_the_choice(core, owner, world):
    core.vaults.create(owner, "prod", "v-local-2", "local")
    result, checks = run_check(core, owner)
    assert checks["vault"]["status"] == "warn" and checks["vault"]["details"]["choices"] == ["v-local", "v-local-2"]
    assert "--vault" in checks["vault"]["fix"] and result["ok"]
    result, checks = run_check(core, owner, vault="v-local-2")
    assert checks["vault"]["status"] == "pass" and result["vault"] == "v-local-2"


def test_agent_missing_warns_crash_consistent(core, owner, world):
    report(core, world, "web1", guest_agent={"present": False, "answering": False, "version": None, "os": {},
                                             "problem_code": "UserErrorGuestAgentNotConfigured", "problem": "no channel",
                                             "recommendation": "add a channel"})
    result, checks = run_check(core, owner)
    ga = checks["guest-agent"]
    assert ga["status"] == "warn" and ga["code"] == "UserErrorGuestAgentNotConfigured"
    assert "crash-consistent" in ga["reason"] and "docs/guides/guest-agent.md" in ga["fix"]
    assert checks["backup-extension"]["status"] == "warn" and checks["support:guest-os"]["status"] == "warn"
    assert result["verdict"] == "warn" and result["ok"]  # still backed up (the seeds' offline VM)


def test_agent_not_answering_fails(core, owner, world):
    report(core, world, "web1", guest_agent=agent(version=None, answering=False, problem=(
        "UserErrorGuestAgentNotResponding", "The guest agent of VM 'web1' did not answer within 5 s (timeout).",
        "Install qemu-guest-agent in the guest and make sure it runs")))
    result, checks = run_check(core, owner)
    assert checks["guest-agent"]["status"] == "fail" and checks["guest-agent"]["code"] == "UserErrorGuestAgentNotResponding"
    assert "qemu-guest-agent" in checks["guest-agent"]["fix"] and not result["ok"]


def test_agent_too_old_fails_with_the_minimum(core, owner, world):
    report(core, world, "web1", guest_agent=agent(version="2.5.0"))
    result, checks = run_check(core, owner)
    v = checks["guest-agent-version"]
    minimum = core.settings.min_guest_agent_version
    assert v["status"] == "fail" and v["code"] == "UserErrorGuestAgentVersionUnsupported"
    assert "2.5.0" in v["reason"] and minimum in v["reason"] and "Update qemu-guest-agent" in v["fix"]
    assert checks["backup-extension"]["status"] == "warn" and result["verdict"] == "fail"


def test_extension_state_reported_by_the_host(core, owner, world):
    from sqlalchemy import select

    from haven.db.models import VirtualMachine

    with core.db.session() as s:
        vm = s.scalar(select(VirtualMachine).where(VirtualMachine.name == "web1"))
        vm.info = {**vm.info, "extension": {"status": "failed", "version": "1.2.0", "message": "guest-exec is disabled",
                                            "error_code": "TransientErrorExtensionInstallFailed"}}
    _, checks = run_check(core, owner)
    e = checks["backup-extension"]
    assert e["status"] == "warn" and e["code"] == "TransientErrorExtensionInstallFailed" and "guest-exec is disabled" in e["reason"]
    with core.db.session() as s:
        vm = s.scalar(select(VirtualMachine).where(VirtualMachine.name == "web1"))
        vm.info = {**vm.info, "extension": {"status": "current", "version": "1.2.0"}}
    _, checks = run_check(core, owner)
    assert checks["backup-extension"]["status"] == "pass" and "1.2.0" in checks["backup-extension"]["reason"]


def test_stopped_vm_is_still_backed_up(core, owner, world):
    report(core, world, "web1", power_state="stopped", guest_agent={"present": True, "answering": False, "version": None, "os": {}})
    result, checks = run_check(core, owner)
    assert checks["guest-agent"]["status"] == "warn" and "stopped" in checks["guest-agent"]["reason"]
    assert "crash-consistent" in checks["backup-extension"]["reason"] and result["ok"]


def test_limitations_hit_fail_the_check_and_refuse_protection(core, owner, world, home):
    from haven.services.support import GuestOsUnsupported, TooManyDataDisks

    import shutil

    shutil.rmtree(home / "vms" / "web1")
    make_folder_vm(home / "vms", "web1", disks=18, size=1 << 20)  # real disks: enable-for-vm probes the VM afresh
    result, checks = run_check(core, owner, probe=True)
    d = checks["support:data-disks"]
    assert d["status"] == "fail" and d["code"] == "UserErrorTooManyDataDisks" and "17 data disks" in d["reason"]
    assert "--exclude-disks" in d["fix"] and not result["ok"]
    with pytest.raises(TooManyDataDisks):
        core.protection.enable(owner, "prod", "v-local", "web1")
    shutil.rmtree(home / "vms" / "web1")
    make_folder_vm(home / "vms", "web1")

    # the OS rule on the facts a guest agent reports (given here); enable-for-vm refusing what a real guest
    # agent reports is tests/hypervisor/test_real_guest.py
    def info():
        return {"name": "web1", "disks": [{"name": "vda"}], "guest_agent": agent(os=os_info)}

    os_info = WIN2003
    report(core, world, "web1", guest_agent=agent(os=WIN2003))
    result, checks = run_check(core, owner)
    o = checks["support:guest-os"]
    assert o["status"] == "fail" and o["code"] == "UserErrorGuestOsUnsupported" and "Windows Server 2003" in o["reason"]
    assert "2008 R2" in o["reason"] and "Upgrade the guest" in o["fix"]
    with pytest.raises(GuestOsUnsupported) as raised:
        core.support.check_protectable(info())
    assert raised.value.code == "UserErrorGuestOsUnsupported"

    os_info = WIN2008R2
    report(core, world, "web1", guest_agent=agent(os=WIN2008R2))
    _, checks = run_check(core, owner)
    assert checks["support:guest-os"]["status"] == "pass"
    core.support.check_protectable(info())  # the oldest supported Windows is accepted


def test_multiple_nics_are_accepted(core, owner, world):
    """Lifted limitation (seeds 000/002/004: VMs with several NICs, reserved IPs or load balancing are not supported):
    Haven backs up the disks and records every NIC of the definition; the network configuration is not a limit."""
    nics = [{"mac": f"52:54:00:00:00:0{i}", "network": f"net{i}", "model": "virtio"} for i in range(3)]
    report(core, world, "web1", nics=nics)
    result, _ = run_check(core, owner)
    assert result["verdict"] == "pass"
    item = core.protection.enable(owner, "prod", "v-local", "web1")
    assert item["vm"] == "web1"


# ---- the network path: endpoint unreachable, time-out, proxy down, proxy demanding credentials, TLS ----


@pytest.fixture
def s3_world(core, owner, home, s3_server, db_url):
    """Vault 'v-s3' whose storage is the S3 server (region 'local' rerouted to S3 for this core)."""
    from dataclasses import replace

    from haven.config import RegionConfig

    name = f"b{abs(hash(db_url)) % 10**8}"
    regions = (RegionConfig("local", f"s3://{name}"), *core.settings.regions[1:])
    object.__setattr__(core, "settings", replace(core.settings, regions=regions))
    core.storage.backend_options = {"s3": dict(s3_server)}
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-s3", "local")
    make_folder_vm(home / "vms", "web1")
    host_id = register_local_host(core, home / "vms")
    report(core, host_id, "web1")
    return host_id


def test_s3_endpoint_checked_step_by_step(core, owner, s3_world):
    result, checks = run_check(core, owner)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "pass", conn
    assert [s["step"] for s in conn["details"]["steps"]] == ["dns", "tcp", "request"]


def test_endpoint_unreachable_fails(core, owner, s3_world, dead_port):
    core.storage.backend_options["s3"]["endpoint_url"] = f"http://127.0.0.1:{dead_port}"
    result, checks = run_check(core, owner, timeout=2)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "fail" and conn["reason"].startswith("tcp:") and f"127.0.0.1:{dead_port}" in conn["reason"]
    assert "haven prepare firewall-rules" in conn["fix"] and not result["ok"]


def test_endpoint_that_never_answers_times_out_naming_it(core, owner, s3_world, blackhole):
    core.storage.backend_options["s3"]["endpoint_url"] = f"http://127.0.0.1:{blackhole}"
    result, checks = run_check(core, owner, timeout=1)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "fail" and conn["code"] == "TransientErrorStorageEndpointTimeout", conn
    assert f"http://127.0.0.1:{blackhole}" in conn["reason"] and "did not answer within 1 s" in conn["reason"]


def test_proxy_down_fails(core, owner, s3_world, home, dead_port):
    write_conf(home, f"HttpProxy.Host=127.0.0.1\nHttpProxy.Port={dead_port}\n")
    result, checks = run_check(core, owner, timeout=2)
    conn = checks["storage-connectivity"]
    assert checks["agent-proxy"]["status"] == "pass" and f"127.0.0.1:{dead_port}" in checks["agent-proxy"]["reason"]
    assert conn["status"] == "fail" and conn["code"] == "TransientErrorProxyUnreachable"
    assert f"127.0.0.1:{dead_port}" in conn["reason"] and "HttpProxy.Host/HttpProxy.Port" in conn["fix"]


def test_proxy_demanding_credentials_fails_then_passes_with_them(core, owner, s3_world, home, squid_auth):
    write_conf(home, f"HttpProxy.Host={squid_auth.host}\nHttpProxy.Port={squid_auth.port}\n")
    result, checks = run_check(core, owner)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "fail" and conn["code"] == "UserErrorProxyAuthenticationRequired", conn
    assert "the proxy requires authentication: check the credentials in the agent configuration" in conn["reason"].lower()
    assert "HttpProxy.User" in conn["fix"]
    write_conf(home, f"HttpProxy.Host={squid_auth.host}\nHttpProxy.Port={squid_auth.port}\n"
                     f"HttpProxy.User={squid_auth.user}\nHttpProxy.Password={squid_auth.password}\n")
    result, checks = run_check(core, owner)
    assert checks["storage-connectivity"]["status"] == "pass", checks["storage-connectivity"]
    assert squid_auth.password not in json.dumps(result)  # never shown


def test_https_endpoint_through_proxy_checks_tls(core, owner, home, azurite_https, test_ca, tinyproxy, db_url):
    """Azure Blob over HTTPS with a test CA, by CONNECT through tinyproxy; an untrusted CA fails at the TLS step."""
    from dataclasses import replace

    from haven.config import RegionConfig

    write_conf(home, f"HttpProxy.Host={tinyproxy.host}\nHttpProxy.Port={tinyproxy.port}\nStorage.CABundle={test_ca['ca']}\n")
    container = f"c{abs(hash(db_url)) % 10**8}"
    regions = (RegionConfig("local", f"azure://{container}"), *core.settings.regions[1:])
    object.__setattr__(core, "settings", replace(core.settings, regions=regions))
    core.storage.backend_options = {"azure": {"connection_string": azurite_https}}
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-az", "local")  # the vault's storage is made through the proxy too
    make_folder_vm(home / "vms", "web1")
    report(core, register_local_host(core, home / "vms"), "web1")
    result, checks = run_check(core, owner)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "pass", conn
    assert [s["step"] for s in conn["details"]["steps"]] == ["dns", "tcp", "proxy", "tls", "request"]
    write_conf(home, f"HttpProxy.Host={tinyproxy.host}\nHttpProxy.Port={tinyproxy.port}\n")  # no CA: untrusted
    result, checks = run_check(core, owner)
    conn = checks["storage-connectivity"]
    assert conn["status"] == "fail" and conn["code"] == "UserErrorStorageCertificateUntrusted" and "Storage.CABundle" in conn["fix"]


# ---- API and CLI ----


def test_api_answers_the_check(api, core, owner, world):
    """Through the API the check probes the VM afresh: web1 is a folder VM without an agent channel that no QEMU runs,
    so it is found stopped and agent-less (whatever was reported before) and is still backed up, crash-consistent:
    a warning, not a failure."""
    r = api.get("/api/v1/subscriptions/prod/prepare/check", params={"vm": "web1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "warn" and body["power_state"] == "stopped" and body["ok"], body
    ga = by_check(body)["guest-agent"]
    assert ga["status"] == "warn" and ga["code"] == "UserErrorGuestAgentNotConfigured"  # its vm.json names no agent channel
    r = api.get("/api/v1/subscriptions/prod/prepare/check", params={"vm": "ghost"})
    assert r.status_code == 404 and r.json()["error"]["code"].startswith("UserErrorVm")


class _Http:
    def __init__(self, tc):
        self.tc = tc

    def request(self, method, path, **kw):
        return self.tc.request(method, "/api/v1" + path, **kw)


@pytest.fixture
def cli(api, monkeypatch):
    from haven.cli import state as cli_state
    from haven.transport.client import ApiClient

    def factory(server=None, token=None):
        c = ApiClient.__new__(ApiClient)
        c.server, c.token, c._http = "http://testserver", token, _Http(api)
        return c

    monkeypatch.setattr(cli_state, "ApiClient", factory)

    def run(*args, expect=0):
        result = CliRunner().invoke(cli_app, list(args))
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        return result

    return run


def test_cli_exit_codes_and_json(cli, core, owner, world):
    ok = cli("prepare", "check", "-s", "prod", "--vm", "web1", "--output", "json")
    assert json.loads(ok.stdout)["verdict"] == "warn"  # probed afresh: a stopped VM (see test_api_answers_the_check)
    table = cli("prepare", "check", "-s", "prod", "--vm", "web1")
    assert "Verdict: warn" in table.stdout and "storage-connectivity" in table.stdout
    core.vaults.delete(owner, "prod", "v-local")  # a failure the fresh probe cannot undo (the agent's is in test_real_guest)
    bad = cli("prepare", "check", "-s", "prod", "--vm", "web1", expect=7)
    assert "fail" in bad.stdout and "UserErrorNoVaultInRegion" in bad.stdout and "Fix" in bad.stdout
    js = cli("-o", "json", "prepare", "check", "-s", "prod", "--vm", "web1", expect=7)
    assert json.loads(js.stdout)["ok"] is False
    missing = cli("prepare", "check", "-s", "prod", "--vm", "ghost", expect=3)
    assert "UserErrorVm" in missing.output

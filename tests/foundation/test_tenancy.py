"""Tenancy: a subscription sees and acts only on the VMs of hosts shared with it, and no error names
another subscription's objects. Tried through the API with tokens of two subscriptions, as an
Operator of one would try to reach the other's VMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from haven.api.app import create_app
from tests.foundation.helpers import make_folder_vm, register_local_host, run_job

A, B = "alpha", "bravo"
VA, VB = "vault-of-alpha", "vault-of-bravo"


def _as(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(core, home: Path, owner_token: str):
    """Subscriptions alpha and bravo with a vault each; the server's own host 'server' (VM 'web-b');
    a remote host 'hosta' shared with alpha only, whose agent reports 'web-a' and 'web-a2'."""
    root = core.auth.authenticate(owner_token)
    for sub, vault in ((A, VA), (B, VB)):
        core.subscriptions.create(root, sub)
        core.vaults.create(root, sub, vault, "local")
    make_folder_vm(home / "vms", "web-b")
    register_local_host(core, home / "vms", name="server")
    added = core.agents.add_host(root, "hosta", "local", "folder:///far-away")
    client = TestClient(create_app(core), raise_server_exceptions=False)
    client.post(f"/api/v1/hosts/hosta/shares/{A}", headers=_as(owner_token))  # a remote host is shared with none until then
    reported = client.put("/api/v1/agent/vms", headers=_as(added["agent_token"]), json={"vms": [
        {"name": "web-a", "power_state": "stopped", "disks": [{"name": "vda", "size": 1 << 20}]},
        {"name": "web-a2", "power_state": "stopped", "disks": [{"name": "vda", "size": 1 << 20}]}]})
    assert reported.status_code == 200, reported.text
    tokens = {
        "root": owner_token,
        "a-operator": core.auth.create_token(root, "a-operator", "Operator", A)["token"],
        "a-owner": core.auth.create_token(root, "a-owner", "Owner", A)["token"],
        "b-operator": core.auth.create_token(root, "b-operator", "Operator", B)["token"],
        "b-owner": core.auth.create_token(root, "b-owner", "Owner", B)["token"],
    }
    yield {"client": client, "tokens": tokens, "core": core, "root": root}
    client.close()


def _same_as_missing(hidden, missing, real: str, ghost: str) -> None:
    """An unshared host's VM (or host) answers exactly like one that does not exist."""
    assert hidden.status_code == missing.status_code, (hidden.text, missing.text)
    h, m = hidden.json()["error"], missing.json()["error"]
    assert h["code"] == m["code"]
    assert h["message"].replace(real, ghost) == m["message"] and h["recommendation"].replace(real, ghost) == m["recommendation"]


def _backup(core, root, sub: str, vault: str, vm: str) -> str:
    job = core.protection.backup_now(root, sub, vault, vm)
    run_job(core, job["id"])
    assert core.jobs.show(root, sub, job["id"])["status"] in ("Completed", "CompletedWithWarnings")
    return core.points.list(root, sub, vault, vm)[0]["id"]


def test_a_vm_of_a_host_not_shared_answers_like_a_missing_vm(world):
    client, t = world["client"], world["tokens"]
    b = _as(t["b-operator"])
    S = f"/api/v1/subscriptions/{B}"

    # not listed: neither the host nor its VMs
    assert "hosta" not in [h["name"] for h in client.get("/api/v1/hosts", headers=b).json()]
    assert not {"web-a", "web-a2"} & {v["name"] for v in client.get("/api/v1/vms", headers=b).json()}
    assert {"web-a", "web-a2"} <= {v["name"] for v in client.get("/api/v1/vms", headers=_as(t["a-operator"])).json()}

    # check-vm, prepare check, enable-for-vm (with and without --host): a typed 404, as for a VM that does not exist
    for path in ("/protection/check-vm?vm={}", "/prepare/check?timeout=1&vm={}", "/protection/check-vm?host=hosta&vm={}"):
        _same_as_missing(client.get(S + path.format("web-a"), headers=b), client.get(S + path.format("ghost"), headers=b), "web-a", "ghost")
    for body in ({"vm": "{}"}, {"vm": "{}", "host": "hosta"}):
        hidden = client.post(f"{S}/vaults/{VB}/items", headers=b, json={k: v.format("web-a") for k, v in body.items()})
        missing = client.post(f"{S}/vaults/{VB}/items", headers=b, json={k: v.format("ghost") for k, v in body.items()})
        _same_as_missing(hidden, missing, "web-a", "ghost")
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "UserErrorVmNotInInventory"

    # back up: nothing of hosta is an item of bravo's vault
    _same_as_missing(client.post(f"{S}/vaults/{VB}/items/web-a/backup", headers=b, json={}),
                     client.post(f"{S}/vaults/{VB}/items/ghost/backup", headers=b, json={}), "web-a", "ghost")

    # restore bravo's own point onto hosta: refused as for a host that does not exist
    core, root = world["core"], world["root"]
    core.protection.enable(root, B, VB, "web-b")
    point = _backup(core, root, B, VB, "web-b")
    P = f"{S}/vaults/{VB}/items/web-b/recovery-points/{point}"
    for action, body in (("restore-vm", {"target_vm_name": "copy", "host": "{}"}),
                         ("restore-disks", {"target": "/tmp/haven-tenancy-restore", "host": "{}"})):
        hidden = client.post(f"{P}/{action}", headers=b, json={k: v.format("hosta") for k, v in body.items()})
        missing = client.post(f"{P}/{action}", headers=b, json={k: v.format("ghost-host") for k, v in body.items()})
        _same_as_missing(hidden, missing, "hosta", "ghost-host")
        assert hidden.json()["error"]["code"] == "UserErrorRestoreHostInvalid"
    # without --host, restore-vm picks a host shared with bravo, never hosta
    job = client.post(f"{P}/restore-vm", headers=b, json={"target_vm_name": "copy"})
    assert job.status_code == 202, job.text
    with core.db.session() as s:
        from haven.db.models import Host, Job

        assert s.get(Host, s.get(Job, job.json()["id"]).host_id).name == "server"


def test_sharing_a_host_lets_the_subscription_see_protect_and_back_up_its_vms(world):
    client, t = world["client"], world["tokens"]
    b = _as(t["b-operator"])
    S = f"/api/v1/subscriptions/{B}"
    assert client.post(f"{S}/vaults/{VB}/items", headers=b, json={"vm": "web-a2"}).status_code == 404

    shared = client.post(f"/api/v1/hosts/hosta/shares/{B}", headers=_as(t["root"]))
    assert shared.status_code == 200 and shared.json()["shares"] == [A, B]
    # each subscription sees the host, and of its shares only its own
    hosts = {h["name"]: h for h in client.get("/api/v1/hosts", headers=b).json()}
    assert hosts["hosta"]["shares"] == [B]
    assert {v["name"] for v in client.get("/api/v1/vms", headers=b).json()} >= {"web-a", "web-a2"}
    assert client.get(f"{S}/protection/check-vm?vm=web-a2", headers=b).json()["protected"] is False

    item = client.post(f"{S}/vaults/{VB}/items", headers=b, json={"vm": "web-a2"})
    assert item.status_code == 201 and item.json()["host"] == "hosta", item.text
    job = client.post(f"{S}/vaults/{VB}/items/web-a2/backup", headers=b, json={})
    assert job.status_code == 202 and job.json()["status"] == "Queued", job.text


def test_a_conflict_over_a_vm_protected_by_another_subscription_names_nothing_of_it(world):
    client, t, core = world["client"], world["tokens"], world["core"]
    a, b = _as(t["a-operator"]), _as(t["b-operator"])
    assert client.post(f"/api/v1/subscriptions/{A}/vaults/{VA}/items", headers=a, json={"vm": "web-a"}).status_code == 201
    client.post(f"/api/v1/hosts/hosta/shares/{B}", headers=_as(t["root"]))
    with core.db.session() as s:
        from haven.db.models import Subscription, Vault

        secrets = [A, VA] + [x.id for x in s.query(Subscription).filter_by(name=A)] + [x.id for x in s.query(Vault).filter_by(name=VA)]

    def leaks(r) -> list[str]:
        return [x for x in secrets if x in r.text]

    S = f"/api/v1/subscriptions/{B}"
    r = client.post(f"{S}/vaults/{VB}/items", headers=b, json={"vm": "web-a"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorVmProtectedByAnotherSubscription", r.text
    assert "another subscription" in r.json()["error"]["message"] and not leaks(r)
    check = client.get(f"{S}/protection/check-vm?vm=web-a", headers=b)
    assert check.status_code == 200 and check.json()["protected"] is True and check.json()["other_subscription"] is True
    assert check.json()["vault"] is None and not leaks(check)

    # soft-deleted in alpha's vault: still nothing of alpha's named
    owner_a = core.auth.authenticate(t["a-owner"])
    core.protection.disable(owner_a, A, VA, "web-a", delete_backup_data=True)
    r = client.post(f"{S}/vaults/{VB}/items", headers=b, json={"vm": "web-a"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorVmProtectedByAnotherSubscription" and not leaks(r)
    # alpha itself is told which of its vaults holds the VM
    r = client.post(f"/api/v1/subscriptions/{A}/vaults/{VA}/items", headers=a, json={"vm": "web-a"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorItemSoftDeleted" and VA in r.json()["error"]["message"]


def test_only_a_global_owner_shares_and_unshares_hosts(world):
    client, t = world["client"], world["tokens"]
    for who in ("a-owner", "b-owner", "b-operator"):
        for method in ("POST", "DELETE"):
            r = client.request(method, f"/api/v1/hosts/hosta/shares/{B}", headers=_as(t[who]))
            assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorAuthorizationFailed", (who, method, r.text)
        r = client.request("DELETE", f"/api/v1/hosts/hosta/shares/{A}", headers=_as(t[who]))
        assert r.status_code == 403, (who, r.text)
    root = _as(t["root"])
    assert [h["shares"] for h in client.get("/api/v1/hosts", headers=root).json() if h["name"] == "hosta"] == [[A]]
    missing = client.post("/api/v1/hosts/nowhere/shares/alpha", headers=root)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "UserErrorHostNotFound"
    missing = client.post("/api/v1/hosts/hosta/shares/nobody", headers=root)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "UserErrorSubscriptionNotFound"
    assert client.post(f"/api/v1/hosts/hosta/shares/{B}", headers=root).json()["shares"] == [A, B]
    assert client.post(f"/api/v1/hosts/hosta/shares/{B}", headers=root).json()["shares"] == [A, B]  # twice: the same
    assert client.delete(f"/api/v1/hosts/hosta/shares/{B}", headers=root).json()["shares"] == [A]
    again = client.delete(f"/api/v1/hosts/hosta/shares/{B}", headers=root)
    assert again.status_code == 404 and again.json()["error"]["code"] == "UserErrorHostNotShared"
    # a subscription Owner cannot add a host to get it shared either: registering hosts is the global Owner's
    added = client.post("/api/v1/hosts", headers=_as(t["b-owner"]), json={"name": "sneaky", "region": "local", "shares": [B]})
    assert added.status_code == 403
    # a share with a subscription that does not exist: nothing is registered
    bad = client.post("/api/v1/hosts", headers=root, json={"name": "kvm-9", "region": "local", "shares": [A, "nobody"]})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "UserErrorSubscriptionNotFound"
    assert "kvm-9" not in {h["name"] for h in client.get("/api/v1/hosts", headers=root).json()}


def test_unsharing_a_host_whose_vms_the_subscription_protects_is_refused_with_the_fix(world):
    client, t, core = world["client"], world["tokens"], world["core"]
    root = _as(t["root"])
    S = f"/api/v1/subscriptions/{A}"
    assert client.post(f"{S}/vaults/{VA}/items", headers=_as(t["a-operator"]), json={"vm": "web-a"}).status_code == 201
    r = client.delete(f"/api/v1/hosts/hosta/shares/{A}", headers=root)
    assert r.status_code == 409 and r.json()["error"]["code"] == "UserErrorHostShareInUse", r.text
    assert "web-a" in r.json()["error"]["message"] and "haven protection disable" in r.json()["error"]["recommendation"]
    assert client.get(f"{S}/protection/check-vm?vm=web-a", headers=_as(t["a-operator"])).json()["protected"] is True  # unchanged

    # stopped (data kept): the share may go; then the VM is gone for alpha, the item and its data stay
    core.protection.disable(core.auth.authenticate(t["a-owner"]), A, VA, "web-a", delete_backup_data=False)
    assert client.delete(f"/api/v1/hosts/hosta/shares/{A}", headers=root).json()["shares"] == []
    a = _as(t["a-operator"])
    assert client.get(f"{S}/vaults/{VA}/items/web-a", headers=a).json()["protection_state"] == "ProtectionStopped"
    resumed = client.post(f"{S}/vaults/{VA}/items", headers=a, json={"vm": "web-a"})
    assert resumed.status_code == 404 and resumed.json()["error"]["code"] == "UserErrorVmNotInInventory"
    assert "web-a" not in {v["name"] for v in client.get("/api/v1/vms", headers=a).json()}


def test_the_servers_own_host_is_shared_with_every_subscription_by_default(world, home):
    client, t, core = world["client"], world["tokens"], world["core"]
    root = _as(t["root"])
    client.post("/api/v1/subscriptions", headers=root, json={"name": "charlie"})  # made after the host registered
    make_folder_vm(home / "vms2", "web-2")
    register_local_host(core, home / "vms2", name="server2")  # registered after the subscriptions
    hosts = {h["name"]: h["shares"] for h in client.get("/api/v1/hosts", headers=root).json()}
    assert hosts == {"hosta": [A], "server": [A, B, "charlie"], "server2": [A, B, "charlie"]}
    # an Owner may still take the own host away from a subscription; a restart does not bring it back
    client.delete(f"/api/v1/hosts/server/shares/{B}", headers=root)
    register_local_host(core, home / "vms", name="server")
    assert {h["name"] for h in client.get("/api/v1/hosts", headers=_as(t["b-operator"])).json()} == {"server2"}


def test_share_own_host_none_leaves_the_servers_host_to_host_share(home, db_url, clock, tmp_path):
    from haven.config import SettingInvalid, load_settings
    from haven.services.core import Haven

    (home / "haven.toml").write_text('[server]\nshare_own_host = "none"\n')
    core = Haven(load_settings(home, database_url=db_url), clock=clock)
    try:
        root = core.auth.authenticate(core.auth.bootstrap_local_owner(home / "credentials.json", "x"))
        core.subscriptions.create(root, "prod")
        make_folder_vm(home / "vms", "web1")
        register_local_host(core, home / "vms")
        assert [h["shares"] for h in core.inventory.list_hosts(root)] == [[]]
        reader = core.auth.authenticate(core.auth.create_token(root, "r", "Reader", "prod")["token"])
        assert core.inventory.list_vms(reader) == []
        register_local_host(core, home / "vms", share=["prod"])
        assert [v["name"] for v in core.inventory.list_vms(reader)] == ["web1"]
    finally:
        core.close()
    (home / "haven.toml").write_text('[server]\nshare_own_host = "some"\n')
    with pytest.raises(SettingInvalid) as e:
        load_settings(home, database_url=db_url)
    assert "share_own_host" in e.value.text and "'all' or 'none'" in e.value.text


def test_migration_0005_keeps_what_existing_subscriptions_use_and_shares_no_idle_remote_host(db_url, clock):
    """An existing deployment: the own host stays shared with every subscription, each host stays shared
    with the subscriptions protecting its VMs; a remote host nobody protects is shared with none."""
    from sqlalchemy import insert, select

    from haven.db.models import Host, HostShare, ProtectedItem, Region, Subscription, Vault, VirtualMachine
    from haven.db.session import Database, migrate

    db = Database(db_url, run_migrations=False)
    try:
        migrate(db.engine, "0004")
        now = clock.now()
        with db.session() as s:
            s.add(Region(name="local", storage_url="file:///nowhere"))
            s.flush()
            subs = {n: Subscription(name=n, created_at=now) for n in ("alpha", "bravo")}
            hosts = {"own": Host(name="own", region="local", adapter_url="folder:///vms", created_at=now),
                     "used": Host(name="used", region="local", adapter_url="folder:///x", created_at=now, job_types=["Backup"]),
                     "idle": Host(name="idle", region="local", adapter_url="folder:///y", created_at=now, job_types=[]),
                     "imported": Host(name="imported", region="local", adapter_url="imported://imported", created_at=now)}
            s.add_all(subs.values())
            s.add_all(hosts.values())
            s.flush()
            # the vaults table as it was at 0004: later migrations add columns the model knows
            s.execute(insert(Vault.__table__).values(id="vb-id", subscription_id=subs["bravo"].id, name="vb", name_key="vb",
                                                     region="local", redundancy="LRS", storage_url="file:///nowhere/vb",
                                                     created_at=now))
            vms = [VirtualMachine(host_id=hosts[h].id, name=f"vm-{h}", last_seen=now) for h in ("used", "imported")]
            s.add_all(vms)
            s.flush()
            # the protected_items table as it was at 0004 (0013 adds retention_due_at)
            for i, vm in enumerate(vms):
                s.execute(insert(ProtectedItem.__table__).values(id=f"item-{i}", vault_id="vb-id", vm_id=vm.id,
                                                                 state="ProtectionStopped", created_at=now))
        migrate(db.engine)
        with db.session() as s:
            names = {h.id: h.name for h in s.scalars(select(Host))} | {x.id: x.name for x in s.scalars(select(Subscription))}
            shares = sorted((names[x.host_id], names[x.subscription_id]) for x in s.scalars(select(HostShare)))
        assert shares == [("imported", "bravo"), ("own", "alpha"), ("own", "bravo"), ("used", "bravo")]
    finally:
        db.dispose()


def test_host_share_unshare_and_list_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from haven.cli.main import app
    from tests.services.haven_server import HavenServer

    server = HavenServer(tmp_path / "srv").start()
    try:
        def run(*args, token=None, expect=0):
            result = CliRunner().invoke(app, ["--server", server.url, "--token", token or server.token, "-o", "json", *args])
            assert result.exit_code == expect, (args, result.exit_code, result.output)
            return json.loads(result.stdout) if expect == 0 and result.stdout.strip() else result

        run("subscription", "create", "--name", "prod")
        run("subscription", "create", "--name", "dev")
        own = [h for h in run("host", "list")]
        assert len(own) == 1 and own[0]["agent"] == "server" and own[0]["shares"] == ["dev", "prod"]  # the own-host rule
        added = run("host", "add", "--name", "far", "--region", "local", "--share", "prod", "--token-file", str(tmp_path / "far.token"))
        assert added["shares"] == ["prod"] and "agent_token" not in added
        assert run("host", "share", "--name", "far", "--subscription", "dev")["shares"] == ["dev", "prod"]
        assert run("host", "unshare", "--name", "far", "-s", "dev")["shares"] == ["prod"]
        table = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, "host", "list"])
        assert table.exit_code == 0 and "shares" in table.stdout and "prod" in table.stdout
        missing = run("host", "unshare", "--name", "far", "-s", "dev", expect=3)
        assert "UserErrorHostNotShared" in missing.output and "haven host list" in missing.output

        prod_owner = run("token", "create", "--name", "po", "--role", "Owner", "--subscription", "prod")["token"]
        denied = run("host", "share", "--name", "far", "-s", "dev", token=prod_owner, expect=6)
        assert "UserErrorAuthorizationFailed" in denied.output
        dev_reader = run("token", "create", "--name", "dr", "--role", "Reader", "--subscription", "dev")["token"]
        assert [h["name"] for h in run("host", "list", token=dev_reader)] == [own[0]["name"]]
        assert [h["shares"] for h in run("host", "list", token=prod_owner) if h["name"] == "far"] == [["prod"]]
    finally:
        server.stop()


def test_an_encrypted_vm_is_never_backed_up_with_another_subscriptions_keys(world, home):
    """The VM's settings name alpha's key vault: bravo may not have the backup service read those keys."""
    import os

    from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE

    core, root, client, t = world["core"], world["root"], world["client"], world["tokens"]
    kv = core.keyvault
    kv.create(root, A, "kv-alpha", "local", purge_protection=False)
    kv.create_key(root, A, "kv-alpha", "enc-kek", "RSA")
    kv.set_bek(root, A, "kv-alpha", "enc-bek", os.urandom(64), kek="enc-kek")
    kv.set_policy(root, A, "kv-alpha", BACKUP_PRINCIPAL, template=BACKUP_TEMPLATE)
    settings = {"method": "luks", "key_vault": "kv-alpha", "bek_secret": "enc-bek", "kek_key": "enc-kek"}
    for vm, extra in (("enc-named", {"subscription": A}), ("enc-unnamed", {})):
        folder = make_folder_vm(home / "vms", vm)
        definition = json.loads((folder / "vm.json").read_text())
        (folder / "vm.json").write_text(json.dumps({**definition, "encryption": {**settings, **extra}}))
    register_local_host(core, home / "vms", name="server")
    b = _as(t["b-operator"])
    for vm in ("enc-named", "enc-unnamed"):
        r = client.post(f"/api/v1/subscriptions/{B}/vaults/{VB}/items", headers=b, json={"vm": vm})
        assert r.status_code == 404 and r.json()["error"]["code"] == "UserErrorKeyVaultNotFound", r.text
    assert client.get(f"/api/v1/subscriptions/{B}/vaults/{VB}/items", headers=b).json() == []
    ok = client.post(f"/api/v1/subscriptions/{A}/vaults/{VA}/items", headers=_as(t["a-operator"]), json={"vm": "enc-unnamed"})
    assert ok.status_code == 201, ok.text

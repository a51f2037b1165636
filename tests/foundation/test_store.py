"""Vault, policy and protection flows through the services, on SQLite and on PostgreSQL."""

import pytest
from sqlalchemy import func, select

from haven.db.models import Policy, Vault
from haven.domain.vault import RedundancyLocked, VaultNameInvalid, VaultNotEmpty
from haven.services.policies import PolicyInUse
from haven.services.protection import VmAlreadyProtected, VmRegionMismatch
from haven.services.vaults import VaultAlreadyExists
from tests.foundation.helpers import make_folder_vm, register_local_host


@pytest.fixture
def owner(core, owner_token):
    return core.auth.authenticate(owner_token)


def _count(core, model) -> int:
    with core.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_vault_gets_default_policy_and_initialised_storage(core, owner, home):
    core.subscriptions.create(owner, "prod")
    vault = core.vaults.create(owner, "prod", "Vault-1", "local")
    assert vault["storage_redundancy"] == "GRS" and vault["policies"] == 1  # default where the region has a pair
    policy = core.policies.show(owner, "prod", "vault-1", "DefaultPolicy")
    assert policy["schedule"]["frequency"] == "daily" and policy["schedule"]["times"] == ["22:30"]
    assert policy["schedule"]["timezone"] == "UTC" and policy["retention"]["daily_days"] == 30
    assert (home / "storage" / "local" / vault["id"]).is_dir()


def test_vault_names_unique_per_subscription_ignoring_case_and_nothing_written(core, owner):
    core.subscriptions.create(owner, "prod")
    core.subscriptions.create(owner, "dev")
    core.vaults.create(owner, "prod", "backup", "local")
    before = (_count(core, Vault), _count(core, Policy))
    with pytest.raises(VaultAlreadyExists):
        core.vaults.create(owner, "prod", "BACKUP", "local")
    with pytest.raises(VaultNameInvalid):
        core.vaults.create(owner, "prod", "9lives", "local")
    assert (_count(core, Vault), _count(core, Policy)) == before
    core.vaults.create(owner, "dev", "backup", "local")  # another subscription: fine


def test_redundancy_locked_once_an_item_is_protected(core, owner, home):
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local")
    assert core.vaults.set_properties(owner, "prod", "v1", "LRS")["storage_redundancy"] == "LRS"
    make_folder_vm(home / "vms", "web1")
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "web1")
    with pytest.raises(RedundancyLocked) as e:
        core.vaults.set_properties(owner, "prod", "v1", "GRS")
    assert "already protects 1 item" in e.value.text


def test_vault_delete_refused_while_it_protects_items(core, owner, home):
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local")
    make_folder_vm(home / "vms", "web1")
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "web1")
    with pytest.raises(VaultNotEmpty):
        core.vaults.delete(owner, "prod", "v1")
    with pytest.raises(PolicyInUse):
        core.policies.delete(owner, "prod", "v1", "DefaultPolicy")
    core.protection.disable(owner, "prod", "v1", "web1", delete_backup_data=False)
    with pytest.raises(VaultNotEmpty):  # stopped with data kept still holds the item
        core.vaults.delete(owner, "prod", "v1")


def test_empty_vault_can_be_deleted(core, owner):
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local")
    core.vaults.delete(owner, "prod", "v1")
    assert core.vaults.list(owner, "prod") == []


def test_vm_must_be_in_the_vault_region_and_protected_once(core, owner, home):
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local")
    core.vaults.create(owner, "prod", "v2", "local")
    make_folder_vm(home / "vms", "web1")
    register_local_host(core, home / "vms")
    core.protection.enable(owner, "prod", "v1", "web1")
    with pytest.raises(VmAlreadyProtected):
        core.protection.enable(owner, "prod", "v2", "web1")
    assert core.protection.check_vm(owner, "prod", "web1")["vault"] == "v1"


def test_region_mismatch_is_refused_with_the_fix(core, owner, home, tmp_path):
    from dataclasses import replace

    from haven.config import RegionConfig

    core.settings = replace(core.settings, regions=core.settings.regions + (RegionConfig("west", f"file://{tmp_path}/west"),))
    core.regions.sync_from_settings()
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v-west", "west")
    make_folder_vm(home / "vms", "web1")
    register_local_host(core, home / "vms")
    with pytest.raises(VmRegionMismatch) as e:
        core.protection.enable(owner, "prod", "v-west", "web1")
    assert "same region" in e.value.text and "local" in e.value.fix


def test_policies_create_update_list_and_validate(core, owner):
    core.subscriptions.create(owner, "prod")
    core.vaults.create(owner, "prod", "v1", "local")
    weekly = {"frequency": "weekly", "times": ["02:00"], "weekdays": [5, 6], "timezone": "Europe/Berlin"}
    created = core.policies.create(owner, "prod", "v1", "weekly-12w", weekly, {"daily_days": None, "weekly_weeks": 12, "weekly_days": [6]})
    assert created["schedule"]["weekdays"] == [5, 6]
    assert {p["name"] for p in core.policies.list(owner, "prod", "v1")} == {"DefaultPolicy", "weekly-12w"}
    from haven.errors import UserError

    with pytest.raises(UserError):
        core.policies.create(owner, "prod", "v1", "bad", {"frequency": "daily", "times": ["22:17"]}, {"daily_days": 30})
    with pytest.raises(UserError):
        core.policies.create(owner, "prod", "v1", "bad2", {"frequency": "daily", "times": ["22:30"]}, {"daily_days": 3})
    assert len(core.policies.list(owner, "prod", "v1")) == 2

"""Retention through the real engine, soft delete (restorable on day 13, gone after day 14), immutable vaults."""

from datetime import datetime, timedelta

import pytest

from fastapi.testclient import TestClient

from haven.api.app import create_app
from haven.domain.vault import ImmutabilityLocked
from haven.jobs.scheduler import Scheduler
from haven.services.points import PointSoftDeleted
from haven.services.protection import ItemNotFound
from haven.services.support import ImmutableVaultRefuses


def _restore(world, point_id, target):
    job = world.core.points.restore_disks(world.owner, "prod", "v1", "web1", point_id, str(target))
    return world.run(job["id"])


def test_daily_retention_expires_points_in_the_database_and_in_storage(world, core, clock):
    world.setup()
    core.policies.create(world.owner, "prod", "v1", "week", {"frequency": "daily", "times": ["22:30"]}, {"daily_days": 7})
    core.protection.set_policy(world.owner, "prod", "v1", "web1", "week")
    clock.advance(timedelta(hours=13, minutes=31))  # 22:31 UTC: the first daily slot is due
    for day in range(12):
        if day:
            clock.advance(timedelta(days=1))
        assert world.scheduled_backup()["status"] in ("Completed", "CompletedWithWarnings")
    Scheduler(core).tick()
    points = world.points()
    assert len(points) == 7  # one per day of the 7 days ending today
    assert {p["id"] for p in points} == world.stored_points()  # expired manifests are gone from storage
    assert all(p["expires_at"] is not None for p in points)


def test_on_demand_point_kept_until_its_retain_until(world, core, clock):
    world.setup()
    keep_until = clock.now() + timedelta(days=60)
    adhoc = world.backup(retain_until=keep_until)["result"]["recovery_point_id"]
    for _ in range(40):
        clock.advance(timedelta(days=1))
        world.backup()
    assert adhoc in {p["id"] for p in world.points()}
    clock.set(keep_until + timedelta(hours=1))
    Scheduler(core).tick()
    assert adhoc not in {p["id"] for p in world.points()}


def test_on_demand_points_without_retain_until_are_kept_30_days_through_the_api(world, core, clock):
    world.setup()
    items = "/api/v1/subscriptions/prod/vaults/v1/items"
    with TestClient(create_app(core), raise_server_exceptions=False, headers={"Authorization": f"Bearer {world.token}"}) as api:
        started = clock.now()
        first = world.run(api.post(f"{items}/web1/backup", json={}).json()["id"])["result"]["recovery_point_id"]
        clock.advance(timedelta(hours=1))
        second = world.run(api.post(f"{items}/web1/backup", json={}).json()["id"])["result"]["recovery_point_id"]
        clock.advance(timedelta(days=2))  # past the next midnight, with a newer point existing
        Scheduler(core).tick()
        points = {p["id"]: p for p in api.get(f"{items}/web1/recovery-points").json()}
        assert set(points) == {first, second}
        assert points[first]["retain_until"] is not None
        assert abs(datetime.fromisoformat(points[first]["retain_until"]) - (started + timedelta(days=30))) < timedelta(seconds=5)
        clock.set(started + timedelta(days=29, hours=23))
        Scheduler(core).tick()
        assert first in {p["id"] for p in api.get(f"{items}/web1/recovery-points").json()}
        clock.set(started + timedelta(days=30, minutes=1))
        Scheduler(core).tick()
        assert {p["id"] for p in api.get(f"{items}/web1/recovery-points").json()} == {second}


def test_soft_deleted_data_is_restorable_on_day_13_and_gone_after_day_14(world, core, clock, tmp_path):
    world.setup()
    point = world.backup()["result"]["recovery_point_id"]
    original = (world.vm_folder / "vda.raw").read_bytes()
    core.protection.disable(world.owner, "prod", "v1", "web1", delete_backup_data=True)
    with pytest.raises(PointSoftDeleted):
        _restore(world, point, tmp_path / "r0")
    clock.advance(timedelta(days=13))
    Scheduler(core).tick()
    item = core.protection.undelete(world.owner, "prod", "v1", "web1")
    assert item["protection_state"] == "ProtectionStopped"
    assert _restore(world, point, tmp_path / "r13")["status"] == "Completed"
    assert (tmp_path / "r13" / "vda.raw").read_bytes() == original
    # delete again, and let the 14 days pass
    core.protection.disable(world.owner, "prod", "v1", "web1", delete_backup_data=True)
    clock.advance(timedelta(days=14, minutes=1))
    assert Scheduler(core).tick()["purged"]
    with pytest.raises(ItemNotFound):
        core.protection.undelete(world.owner, "prod", "v1", "web1")
    assert world.stored_points() == set()


def test_a_locked_immutable_vault_refuses_every_destructive_call(world, core):
    world.setup()
    world.backup()
    core.vaults.set_properties(world.owner, "prod", "v1", immutability="Enabled")
    core.vaults.set_properties(world.owner, "prod", "v1", immutability="Locked")
    with pytest.raises(ImmutableVaultRefuses):
        core.protection.disable(world.owner, "prod", "v1", "web1", delete_backup_data=True)
    with pytest.raises(ImmutableVaultRefuses):
        core.policies.update(world.owner, "prod", "v1", "DefaultPolicy", None, {"daily_days": 7})
    with pytest.raises(ImmutabilityLocked):
        core.vaults.set_properties(world.owner, "prod", "v1", immutability="Disabled")
    from haven.domain.vault import SoftDeletePeriodInvalid, VaultNotEmpty

    assert core.vaults.set_properties(world.owner, "prod", "v1", soft_delete_days=30)["soft_delete_days"] == 30
    with pytest.raises(SoftDeletePeriodInvalid):
        core.vaults.set_properties(world.owner, "prod", "v1", soft_delete_days=20)
    with pytest.raises(VaultNotEmpty):
        core.vaults.delete(world.owner, "prod", "v1")
    # what only adds protection is still allowed
    assert core.policies.update(world.owner, "prod", "v1", "DefaultPolicy", None, {"daily_days": 60})["retention"]["daily_days"] == 60
    assert len(world.points()) == 1


def test_garbage_collection_after_retention_frees_chunks_only_expired_points_used(world, core, clock):
    import os

    world.setup()
    core.policies.create(world.owner, "prod", "v1", "week", {"frequency": "daily", "times": ["22:30"]}, {"daily_days": 7})
    core.protection.set_policy(world.owner, "prod", "v1", "web1", "week")
    disk = world.vm_folder / "vda.raw"
    clock.advance(timedelta(hours=13, minutes=31))  # 22:31 UTC: the first daily slot is due
    for day in range(10):
        if day:
            clock.advance(timedelta(days=1))
        with open(disk, "r+b") as fh:  # new data every day: each point has chunks of its own
            fh.seek(day << 20)
            fh.write(os.urandom(1 << 20))
        world.scheduled_backup()
    assert len(world.points()) == 7  # retention ran after each backup: 3 points expired
    # retention deleted points, so GC is due; it frees the chunks only the expired points used at once
    clock.advance(timedelta(minutes=core.settings.gc_delay_minutes))
    first = Scheduler(core).tick()
    assert sum(first["collected"].values()) >= 1
    # every remaining point still restores byte for byte (the newest one against the live disk)
    from haven.db.models import Vault

    with core.db.session() as s:
        vault = s.query(Vault).one()
    report = core.storage.open(vault).verify(read_data=True)
    assert report.ok, report

"""`haven vault verify` as a job: clean on a healthy vault; a flipped bit is found, the affected point
named, the chunk quarantined, and the next backup stores it again."""

import os

from haven.db.models import Vault


def _chunk_files(core):
    with core.db.session() as s:
        vault = s.query(Vault).one()
    root = vault.storage_url.removeprefix("file://")
    return [os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, "chunks")) for f in files]


def test_verify_job_names_the_damaged_point_and_the_next_backup_heals(world, core):
    world.setup()
    point = world.backup()["result"]["recovery_point_id"]
    job = core.lifecycle.request_verify(world.owner, "prod", "v1", read_data=True, subset=None)
    clean = world.run(job["id"])
    assert clean["status"] == "Completed" and clean["result"]["ok"] and clean["result"]["chunks_read"] > 0
    victim = _chunk_files(core)[0]
    with open(victim, "r+b") as fh:  # one flipped bit
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 0x01]))
    job = core.lifecycle.request_verify(world.owner, "prod", "v1", read_data=True, subset=None)
    damaged = world.run(job["id"])
    assert damaged["status"] == "CompletedWithWarnings" and not damaged["result"]["ok"]
    assert [a["point_id"] for a in damaged["result"]["affected"]] == [point]
    assert damaged["result"]["quarantined"]
    world.backup()  # meets the quarantined chunk and stores it again
    job = core.lifecycle.request_verify(world.owner, "prod", "v1", read_data=True, subset=None)
    assert world.run(job["id"])["result"]["ok"]


def test_verify_subset_is_validated_before_anything_runs(world, core):
    import pytest

    from haven.errors import UserError

    world.setup()
    with pytest.raises(UserError):
        core.lifecycle.request_verify(world.owner, "prod", "v1", read_data=True, subset="31/30")

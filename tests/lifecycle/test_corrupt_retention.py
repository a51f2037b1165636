"""Retention and Corrupt points: a point verify found damaged never holds a retention tier in place of a
restorable one (the day's earlier, whole point is kept as the day's daily point), and the damaged point
itself is kept as long as the rule would keep it, so it can still heal."""

from __future__ import annotations

import os
from datetime import timedelta

from haven.db.models import Vault


def _chunk_files(core) -> set[str]:
    with core.db.session() as s:
        root = s.query(Vault).one().storage_url.removeprefix("file://")
    return {os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, "chunks")) for f in files}


def test_a_corrupt_daily_point_does_not_push_out_the_days_whole_point(world, core, clock):
    world.setup()
    first = world.backup()["result"]["recovery_point_id"]
    before = _chunk_files(core)
    with open(world.vm_folder / "vda.raw", "r+b") as fh:  # new data: the second point has chunks of its own
        fh.seek(1 << 20)
        fh.write(os.urandom(256 << 10))
    clock.advance(timedelta(hours=1))
    second = world.backup()["result"]["recovery_point_id"]
    own = sorted(_chunk_files(core) - before)
    assert own, "the second backup stored no chunk of its own"
    with open(own[0], "r+b") as fh:
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 0x01]))
    job = core.lifecycle.request_verify(world.owner, "prod", "v1", read_data=True, subset=None)
    assert world.run(job["id"])["result"]["points_marked_corrupt"] == [second]

    clock.advance(timedelta(days=1))  # the day is over: its daily point is its latest point
    item_id = core.protection.show_item(world.owner, "prod", "v1", "web1")["id"]
    assert core.lifecycle.apply_retention(item_id) == []
    states = {p["id"]: p["state"] for p in world.points()}
    assert states == {first: "Available", second: "Corrupt"}, states
    kept = {p["id"]: p["expires_at"] for p in world.points()}
    assert kept[first] is not None and kept[first] > clock.now() + timedelta(days=28)  # the whole point holds the day's tier

"""Stopping a running backup cancels it cleanly: no recovery point in the database or in storage."""

import random
import time

from haven.jobs.runner import JobRunner
from tests.foundation.helpers import make_folder_vm, register_local_host


def test_stop_a_running_backup_leaves_no_partial_point(world, core):
    core.subscriptions.create(world.owner, "prod")
    core.vaults.create(world.owner, "prod", "v1", "local")
    make_folder_vm(world.home / "vms", "big", size=640 << 20, data=b"".join(random.Random(7).randbytes(1 << 20) for _ in range(512)))
    register_local_host(core, world.home / "vms")
    core.protection.enable(world.owner, "prod", "v1", "big")
    job = core.protection.backup_now(world.owner, "prod", "v1", "big")
    runner = JobRunner(core.queue, core.job_handlers(), workers=1, poll_interval=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while core.jobs.show(world.owner, "prod", job["id"])["status"] != "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stopped = core.jobs.stop(world.owner, "prod", job["id"])
        assert stopped["status"] in ("Cancelling", "Cancelled")
        final = core.queue.wait_until_finished(job["id"], 120)
    finally:
        runner.stop()
    assert final.status == "Cancelled" and final.error_code == "UserCancelled", (final.error_code, final.error_message)
    assert world.points("big") == []
    assert world.stored_points() == set()
    assert core.protection.show_item(world.owner, "prod", "v1", "big")["last_backup_status"] == "Cancelled"

"""Haven's metadata at fleet scale (issue 23): N protected VMs x M recovery points on PostgreSQL.

    python -m bench.scale [--quick] [--vms 1000] [--points 400] [--repeat 20] [--work /var/tmp/haven-bench-scale]

A throwaway PostgreSQL (``tests/services/postgres.py``) holds the metadata; the vault is a folder. The fleet is
made through the services as a user's would be: image-folder VMs (tiny disks) reported by the server's own
host agent, protected with ``enable-for-vm`` in bulk (``ProtectionService.enable_many``), one recovery point a
day for M days per VM recorded with the same service call a backup's commit uses (``record_point``; no data is
copied: this measures the metadata, not the engine), under a policy keeping them all (daily, 9999 days).

Measured (times in ms; ``--quick`` is 100 x 40):
* every list endpoint through the HTTP API (FastAPI in process), idle: p50 and p95 of ``--repeat`` requests
  of the first page (limit 100) and of a page deep in the list (its cursor);
* a scheduler tick (``Scheduler.housekeeping``, what ``haven serve``'s scheduler thread runs) with nothing due,
  and the tick at a daily slot that enqueues every VM's backup;
* retention: one pass over every item (all due: just recorded) and a pass with nothing due.
Results are printed and written to ``results-scale.json`` in the work folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

SUB, VAULT = "fleet", "v1"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def build(core, owner, home: Path, vms: int, points: int, now: datetime) -> dict:
    from haven.agent.local import LocalAgent
    from haven.db.models import ProtectedItem, VirtualMachine
    from haven.services.recording import PointRecord, record_point
    from tests.foundation.helpers import make_folder_vm

    names = [f"vm{i:05d}" for i in range(vms)]
    for name in names:
        make_folder_vm(home / "vms", name, size=1 << 16, data=b"haven")
    agent = LocalAgent(core, f"folder://{home / 'vms'}", host_name="host1", region="local")
    agent.register()
    agent.refresh_inventory()
    core.subscriptions.create(owner, SUB)
    core.vaults.create(owner, SUB, VAULT, "local")
    core.policies.create(owner, SUB, VAULT, "keep", {"frequency": "daily", "times": ["22:30"]}, {"daily_days": 9999})
    took = {}
    took["protect_s"], _ = _timed(lambda: [core.protection.enable_many(owner, SUB, VAULT, names[i:i + 500], "keep")
                                           for i in range(0, vms, 500)])
    with core.db.session() as s:
        items = s.execute(__import__("sqlalchemy").select(ProtectedItem.id, ProtectedItem.vault_id, VirtualMachine.name)
                          .join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)).all()

    def record():
        for item_id, vault_id, vm in items:
            with core.db.session() as s:
                for day in range(points, 0, -1):
                    when = now - timedelta(days=day) + timedelta(minutes=1)
                    record_point(s, PointRecord(
                        point_id=f"{when:%Y%m%dT%H%M%S}-{item_id[:8]}", item_id=item_id, vault_id=vault_id, job_id=None,
                        time=when, consistency="CrashConsistent", disks=[{"name": "vda", "size": 1 << 16, "format": "raw"}],
                        stored_bytes=5, expires_at=None), vm, None)

    took["record_points_s"], _ = _timed(record)
    return {k: round(v, 2) for k, v in took.items()}


def lists(api, repeat: int) -> dict:
    base = f"/api/v1/subscriptions/{SUB}/vaults/{VAULT}"
    urls = {
        "items": f"{base}/items", "recovery-points": f"{base}/items/vm00000/recovery-points", "jobs": f"{base}/jobs",
        "alerts": f"{base}/alerts", "policies": f"{base}/policies", "file-downloads": f"{base}/file-downloads",
        "vaults": f"/api/v1/subscriptions/{SUB}/vaults", "vms": "/api/v1/vms", "hosts": "/api/v1/hosts",
    }
    out = {}
    for name, url in urls.items():
        first = api.get(url, params={"limit": 100})
        assert first.status_code == 200, (url, first.text)
        deep = first.headers.get("X-Next-Cursor")
        for label, params in (("first", {"limit": 100}), ("next", {"limit": 100, "cursor": deep})):
            if label == "next" and not deep:
                continue
            times = []
            for _ in range(repeat):
                t, r = _timed(lambda: api.get(url, params=params))
                assert r.status_code == 200, (url, r.text)
                times.append(t)
            times.sort()
            out[f"{name} ({label} page)"] = {"p50_ms": _ms(statistics.median(times)),
                                             "p95_ms": _ms(times[min(len(times) - 1, int(0.95 * len(times)))])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 VMs x 40 points")
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/haven-bench-scale"))
    args = ap.parse_args()
    if args.quick:
        args.vms, args.points = 100, 40

    from fastapi.testclient import TestClient

    from haven.api.app import create_app
    from haven.clock import FakeClock
    from haven.config import RegionConfig, load_settings
    from haven.jobs.scheduler import Scheduler
    from haven.services.core import Haven
    from tests.services.postgres import PostgresServer

    shutil.rmtree(args.work, ignore_errors=True)
    home = args.work / "home"
    (home / "vms").mkdir(parents=True)
    pg = PostgresServer().start()
    try:
        url = pg.create_database("bench")
        now = datetime(2027, 1, 4, 12, 0, tzinfo=timezone.utc)
        clock = FakeClock(now)
        settings = load_settings(home, database_url=url,
                                 regions=(RegionConfig("local", f"file://{home / 'storage'}", paired_region=None),))
        core = Haven(settings, clock=clock)
        token = core.auth.bootstrap_local_owner(home / "credentials.json", "bench")
        owner = core.auth.authenticate(token)
        result = {"vms": args.vms, "points_per_vm": args.points, "build": build(core, owner, home, args.vms, args.points, now)}

        due = core.lifecycle.items_due_for_retention()
        t, _ = _timed(lambda: [core.lifecycle.apply_retention(i) for i in due])
        result["retention"] = {"all_due_items": len(due), "all_due_ms": _ms(t)}
        t, again = _timed(lambda: [core.lifecycle.apply_retention(i) for i in core.lifecycle.items_due_for_retention()])
        result["retention"] |= {"nothing_due_items": len(again), "nothing_due_ms": _ms(t)}

        scheduler = Scheduler(core)
        t, idle = _timed(scheduler.housekeeping)
        assert idle["enqueued"] == [] and idle["expired"] == [], idle
        result["tick_idle_ms"] = _ms(t)

        with TestClient(create_app(core)) as api:
            api.headers["Authorization"] = f"Bearer {token}"
            result["lists_idle"] = lists(api, args.repeat)

        clock.set(now.replace(hour=22, minute=31))
        t, storm = _timed(scheduler.housekeeping)
        result["tick_enqueue_all_ms"] = _ms(t)
        result["tick_enqueued"] = len(storm["enqueued"])
        core.close()
    finally:
        pg.stop()
    out = args.work / "results-scale.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()

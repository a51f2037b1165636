"""GC time against the number of recovery points: a first run (empty chunk-list cache), a second run
over the same points, and a run after 1% of the points changed (1% new, 1% deleted).

    .venv/bin/python -m bench.gc_scale --points 100 1000 10000 --work /tmp/haven-gc-bench

Engine alone, tiny data: a folder vault whose manifests are real (sealed, one 4 MiB disk each,
chains of incremental points sharing 3 of 4 chunks with their parent) and whose chunk objects are
placeholders (GC only lists chunks, it never reads them); the folder is not fsynced. ``--get-ms`` adds that many milliseconds
to every object read, as a stand-in for an object store's GET latency. Prints one line per size
and writes ``gc-scale.json`` into the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from haven.engine import Repository
from haven.engine.backend import WrappingBackend
from haven.engine.format import DiskManifest, PointManifest, chunk_name
from haven.engine.keys import LocalKeyWrapper
from haven.engine.local import LocalBackend

ITEMS = 50
SLOTS = 4
MiB = 1 << 20


class SlowReads(WrappingBackend):
    def __init__(self, inner, get_ms: float):
        super().__init__(inner)
        self.get_s, self.loads = get_ms / 1000.0, 0

    def load(self, name):
        self.loads += 1
        if self.get_s:
            time.sleep(self.get_s)
        return super().load(name)


def _point(repo: Repository, backend, item: int, n: int, parent: list[bytes] | None) -> list[bytes]:
    ids = list(parent[1:]) if parent else [os.urandom(32) for _ in range(SLOTS - 1)]
    ids.append(os.urandom(32))
    for cid in ids[-1:] if parent else ids:
        backend.store(chunk_name(cid), b"x")
    disk = DiskManifest("vda", SLOTS * MiB, "raw", MiB, ids)
    created = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(hours=n)
    repo.write_point(PointManifest(f"vm-{item}", f"p-{n:06d}", created, {}, [disk], None))
    return ids


def _timed_gc(repo, cache, backend: SlowReads) -> tuple[float, int, int]:
    backend.loads = 0
    t0 = time.perf_counter()
    report = repo.gc(grace=timedelta(0), cache=cache)
    return time.perf_counter() - t0, report.manifests_read, backend.loads


def measure(points: int, work: Path, get_ms: float) -> dict:
    folder = work / f"vault-{points}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(work / f"cache-{points}", ignore_errors=True)
    plain = LocalBackend(folder, fsync=False)  # setup speed; GC itself does not fsync a read
    kek = LocalKeyWrapper(b"k" * 32)
    Repository.init(plain, kek, {"name": "bench"})
    backend = SlowReads(plain, get_ms)
    repo = Repository.open(backend, kek)
    last: dict[int, list[bytes]] = {}
    for n in range(points):
        last[n % ITEMS] = _point(repo, plain, n % ITEMS, n, last.get(n % ITEMS))
    cache = repo.gc_cache(work / f"cache-{points}")
    out = {"points": points, "get_ms": get_ms}
    out["first_s"], out["first_manifests"], out["first_loads"] = _timed_gc(repo, cache, backend)
    out["second_s"], out["second_manifests"], out["second_loads"] = _timed_gc(repo, cache, backend)
    change = max(1, points // 100)
    for n in range(points, points + change):
        last[n % ITEMS] = _point(repo, plain, n % ITEMS, n, last.get(n % ITEMS))
    for n in range(change):  # the oldest points go, as retention would take them
        repo.delete_point(f"vm-{n % ITEMS}", f"p-{n:06d}")
    out["changed_s"], out["changed_manifests"], out["changed_loads"] = _timed_gc(repo, cache, backend)
    cache.close()
    shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--get-ms", type=float, default=0.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/haven-gc-bench"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'points':>7} {'first s':>8} {'read':>6} {'second s':>9} {'read':>5} {'1% changed s':>13} {'read':>5}")
    for n in args.points:
        r = measure(n, args.work, args.get_ms)
        rows.append(r)
        print(f"{n:>7} {r['first_s']:>8.2f} {r['first_manifests']:>6} {r['second_s']:>9.3f} {r['second_manifests']:>5}"
              f" {r['changed_s']:>13.3f} {r['changed_manifests']:>5}", flush=True)
    (args.work / "gc-scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""The Haven side of the benchmark, as a separate process (so its peak RSS is measured alone).

    python -m bench.haven_run init REPO
    python -m bench.haven_run backup REPO ITEM POINT IMAGE [--parent P] [--changed JSON]
    python -m bench.haven_run restore REPO ITEM POINT TARGET
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from haven.engine import Extent, LocalBackend, LocalKeyWrapper, RawFileSource, Repository
from haven.engine.allocator import keep_chunk_buffers

KEK = LocalKeyWrapper(b"haven-benchmark-master-key-000000")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["init", "backup", "restore"])
    ap.add_argument("repo", type=Path)
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--parent")
    ap.add_argument("--changed", type=Path)
    a = ap.parse_args()
    keep_chunk_buffers()  # as haven serve and haven agent do
    backend = LocalBackend(a.repo)
    if a.cmd == "init":
        Repository.init(backend, KEK, {"name": "bench"})
        return
    repo = Repository.open(backend, KEK)
    if a.cmd == "backup":
        item, point, image = a.rest
        changed = [Extent(o, n) for o, n in json.loads(a.changed.read_text())] if a.changed else None
        with RawFileSource(image, name="vda", changed=changed) as src:
            s = repo.backup(item, point, [src], {}, parent_point_id=a.parent)
        print(json.dumps({k: v for k, v in s.as_dict().items() if k != "disks"}))
    else:
        item, point, target = a.rest
        s = repo.restore_disk(item, point, "vda", target)
        print(json.dumps(s.__dict__))


if __name__ == "__main__":
    main()

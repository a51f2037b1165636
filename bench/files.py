"""Benchmark (not a test) of file recovery straight from the vault, through a real ``haven serve``:

* listing a folder of 10,000 entries (API and ``haven restore files ls``): target < 2 s;
* a 1 GiB file downloaded through the API (streamed, hashed as it arrives): target >= 150 MB/s;
* ``find`` over 30 points of a 4 GiB disk (API and ``haven restore files find --all-points``): target < 30 s.

    python -m bench.files [--work DIR] [--points 30] [--out bench/results-files.json]

The disk: a 4 GiB ext4 (sparse) with /many (10,000 files), /data/big.bin (1 GiB of incompressible
bytes) and /etc/app.conf, rewritten (debugfs, no mount) before every backup so each point holds its
own version; find must name every point with that point's hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.services.haven_server import HavenServer  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20
TARGETS = {"list_s": 2.0, "download_mb_s": 150.0, "find_s": 30.0}


def sh(*cmd, **kw) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw).stdout


def build_disk(work: Path, disk: Path) -> Path:
    src = work / "tree"
    (src / "many").mkdir(parents=True)
    for i in range(10_000):
        (src / "many" / f"entry-{i:05d}.txt").write_text(f"{i}\n")
    (src / "data").mkdir()
    with open(src / "data" / "big.bin", "wb") as fh:
        for _ in range(GiB // (64 * MiB)):
            fh.write(os.urandom(64 * MiB))
    (src / "etc").mkdir()
    (src / "etc" / "app.conf").write_text("version = 0\n")
    with open(disk, "wb") as fh:
        fh.truncate(4 * GiB)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, disk)
    return src


def app_conf(version: int) -> bytes:
    return f"version = {version}\n".encode() + b"x" * version


def set_version(disk: Path, work: Path, version: int) -> str:
    conf = work / "app.conf"
    conf.write_bytes(app_conf(version))
    sh("debugfs", "-w", "-R", "rm /etc/app.conf", disk)
    sh("debugfs", "-w", "-R", f"write {conf} /etc/app.conf", disk)
    return hashlib.sha256(conf.read_bytes()).hexdigest()[:12]


def cli(srv: HavenServer, *args: str) -> tuple[float, object]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "haven.cli.main", "-o", "json", *args], capture_output=True, text=True,
                       env={**srv.cli_env(), "PYTHONPATH": str(ROOT / "src")})
    if r.returncode:
        raise RuntimeError(f"haven {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]} {r.stdout[-2000:]}")
    return time.perf_counter() - t, json.loads(r.stdout) if r.stdout.strip() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path)
    ap.add_argument("--points", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results-files.json")
    ap.add_argument("--reuse", action="store_true", help="measure again on --work's server home and points (no build, no backups)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="haven-bench-files-"))
    srv = HavenServer(work / "srv")
    folder = srv.home / "vms" / "files1"
    disk, src = folder / "vda.raw", work / "tree"
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]}, "targets": TARGETS}
    if not a.reuse:
        folder.mkdir(parents=True)
        t = time.perf_counter()
        build_disk(work, disk)
        (folder / "vm.json").write_text(json.dumps({"name": "files1", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
        print(f"disk built in {time.perf_counter() - t:.1f} s", flush=True)
    srv.start()
    try:
        V = ["-s", "prod", "-v", "v1"]
        if not a.reuse:
            cli(srv, "subscription", "create", "--name", "prod")
            cli(srv, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
            cli(srv, "protection", "enable-for-vm", *V, "--vm", "files1")
            t = time.perf_counter()
            for i in range(a.points):
                set_version(disk, work, i + 1)
                _, job = cli(srv, "protection", "backup-now", *V, "--vm", "files1", "--wait")
                assert job["status"] in ("Completed", "CompletedWithWarnings"), job
            results["backups_s"] = round(time.perf_counter() - t, 1)
            print(f"{a.points} backups in {results['backups_s']} s", flush=True)
        _, points = cli(srv, "recoverypoint", "list", *V, "--vm", "files1")
        oldest_first = [p["id"] for p in reversed(points)]
        hashes = {p: hashlib.sha256(app_conf(i + 1)).hexdigest()[:12] for i, p in enumerate(oldest_first)}
        newest = oldest_first[-1]
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=600)
        base = "/api/v1/subscriptions/prod/vaults/v1/items/files1"

        # 1. a folder of 10,000 entries
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            r = api.get(f"{base}/recovery-points/{newest}/files", params={"path": "/many"})
            runs.append(time.perf_counter() - t)
            assert r.status_code == 200 and len(r.json()["entries"]) == 10_000, r.text[:500]
        cli_s, listing = cli(srv, "restore", "files", "ls", *V, "--vm", "files1", "--rp-name", newest, "--path", "/many")
        assert len(listing["entries"]) == 10_000
        print("listed", flush=True)
        results["list_10000"] = {"api_first_s": round(runs[0], 3), "api_next_s": round(min(runs[1:]), 3), "cli_s": round(cli_s, 3)}

        # 2. a 1 GiB file through the API
        want = hashlib.sha256((src / "data" / "big.bin").read_bytes()).hexdigest()
        speeds = []
        for _ in range(2):
            h, n = hashlib.sha256(), 0
            t = time.perf_counter()
            with api.stream("GET", f"{base}/recovery-points/{newest}/files/download", params={"path": "/data/big.bin"}) as r:
                assert r.status_code == 200
                for block in r.iter_bytes(4 * MiB):
                    h.update(block)
                    n += len(block)
            s = time.perf_counter() - t
            assert n == GiB and h.hexdigest() == want
            speeds.append(round(n / s / 1e6, 1))
        results["download_1gib"] = {"first_mb_s": speeds[0], "again_mb_s": speeds[1]}
        print(json.dumps(results), flush=True)

        # 3. find over every point
        t = time.perf_counter()
        r = api.get(f"{base}/files/find", params={"name": "app.conf", "all_points": True})
        api_find = time.perf_counter() - t
        assert r.status_code == 200, r.text[:500]
        got = {m["recovery_point"]: m["sha256"] for m in r.json()["matches"]}
        assert got == hashes, "find must name every point with its own version"
        cli_s, found = cli(srv, "restore", "files", "find", *V, "--vm", "files1", "--name", "app.conf", "--all-points")
        assert {m["recovery_point"]: m["sha256"] for m in found["matches"]} == hashes
        results["find_30_points"] = {"points": a.points, "api_s": round(api_find, 2), "cli_s": round(cli_s, 2)}
        results["met"] = {
            "list": results["list_10000"]["api_first_s"] < TARGETS["list_s"],
            "download": results["download_1gib"]["first_mb_s"] >= TARGETS["download_mb_s"],
            "find": results["find_30_points"]["api_s"] < TARGETS["find_s"],
        }
    finally:
        srv.stop()
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

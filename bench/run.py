"""Haven vs restic vs borg on the same images, in one go (issue 3's benchmark).

    .venv/bin/python -m bench.run --size-gib 1 --repeat 3 --work /tmp/haven-bench

Steps per tool and repetition (fresh repository each time): full backup of ``base.img``,
incremental of ``next.img`` (1% rewritten; Haven gets the changed ranges as its dirty bitmap,
restic and borg read the whole file as they do for any changed image), backup of ``clone.img``
(2% changed) into the same repository, restore of the full backup. Before every timed step the
disk is flushed and left idle for a second (``settle``, untimed), so no step pays for the writeback
or the discards of the one before. After a restore a timed ``sync`` gives ``restore_durable``: Haven
fsyncs what it restores, restic and borg do not, so that column compares like with like. Each
step runs as its own process; its wall time and peak RSS (``wait4``) are recorded. Prints medians and ratios and
writes ``results.json`` into the work folder. The page cache is not dropped between tools; borg drops
the pages of every file it reads (``posix_fadvise`` in its chunker), so the images are partly cold
for the tool after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .workload import GiB, generate

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "RESTIC_PASSWORD": "bench", "BORG_PASSPHRASE": "bench", "RESTIC_PROGRESS_FPS": "0.1",
       "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, str]:
    """Run ``cmd`` (setup steps, not measured for memory); return (seconds, stdout)."""
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True)
    if res.returncode:
        raise RuntimeError(f"{cmd} failed: {res.stderr.decode()[-2000:]}")
    return time.monotonic() - t0, res.stdout.decode()


def settle() -> None:
    """Flush the disk and leave it idle for a second (the mount may discard freed blocks)."""
    subprocess.run(["sync"], check=True)
    time.sleep(1)


def timed_rss(cmd, cwd=None, env=None):
    """Like ``timed`` but measures peak RSS through a wrapper (Popen reaps the child itself),
    starting from a settled disk."""
    settle()
    wrapper = [PY, "-c", (
        "import os,sys,subprocess,resource;"
        "p=subprocess.run(sys.argv[1:]);"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "sys.stderr.write('\\nPEAKRSS %d\\n' % r);sys.exit(p.returncode)")] + cmd
    t0 = time.monotonic()
    res = subprocess.run(wrapper, cwd=cwd, env=env or ENV, capture_output=True)
    secs = time.monotonic() - t0
    err = res.stderr.decode()
    if res.returncode:
        raise RuntimeError(f"{cmd} failed: {err[-2000:]}")
    rss = int(err.rsplit("PEAKRSS", 1)[1].split()[0]) * 1024
    return secs, rss, res.stdout.decode()


def restore_step(r: dict, cmd: list[str], **kw) -> None:
    """Time a restore (``r["restore"]``) and the restore plus the flush of what it wrote
    (``r["restore_durable"]``), starting from a settled disk."""
    r["restore"] = timed_rss(cmd, **kw)
    r["restore_durable"] = (r["restore"][0] + timed(["sync"])[0], None, "")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---- tools: each returns {step: (secs, rss)} and sizes ----


def run_haven(wl: Path, work: Path) -> dict:
    repo, out = work / "repo", work / "restore.img"
    h = [PY, "-m", "bench.haven_run"]
    timed_rss(h + ["init", str(repo)], cwd=ROOT)
    r = {"full": timed_rss(h + ["backup", str(repo), "vm1", "p1", str(wl / "base.img")], cwd=ROOT)}
    size_full = du(repo)
    r["incremental"] = timed_rss(h + ["backup", str(repo), "vm1", "p2", str(wl / "next.img"), "--parent", "p1",
                                      "--changed", str(wl / "next.changed.json")], cwd=ROOT)
    size_incr = du(repo)
    r["clone"] = timed_rss(h + ["backup", str(repo), "vm2", "p1", str(wl / "clone.img")], cwd=ROOT)
    size_clone = du(repo)
    restore_step(r, h + ["restore", str(repo), "vm1", "p1", str(out)], cwd=ROOT)
    _check(out, wl / "base.img")
    return _result(r, size_full, size_incr, size_clone)


def run_restic(wl: Path, work: Path) -> dict:
    repo, target = work / "repo", work / "restore"
    base = ["restic", "-r", str(repo), "--quiet"]
    timed(base + ["init"])
    r = {"full": timed_rss(base + ["backup", "--json", str(wl / "base.img")])}
    snap = [json.loads(line) for line in r["full"][2].splitlines() if '"snapshot_id"' in line][-1]["snapshot_id"]
    size_full = du(repo)
    r["incremental"] = timed_rss(base + ["backup", str(wl / "next.img")])
    size_incr = du(repo)
    r["clone"] = timed_rss(base + ["backup", str(wl / "clone.img")])
    size_clone = du(repo)
    restore_step(r, base + ["restore", snap, "--target", str(target)])
    _check(target / str(wl / "base.img").lstrip("/"), wl / "base.img")
    return _result(r, size_full, size_incr, size_clone)


def run_borg(wl: Path, work: Path, compression: str) -> dict:
    repo, target = work / "repo", work / "restore"
    env = {**ENV, "BORG_BASE_DIR": str(work / "borgbase")}
    timed(["borg", "init", "-e", "repokey", str(repo)], env=env)
    create = ["borg", "create", "--compression", compression]
    r = {"full": timed_rss(create + [f"{repo}::full", str(wl / "base.img")], env=env)}
    size_full = du(repo)
    r["incremental"] = timed_rss(create + [f"{repo}::next", str(wl / "next.img")], env=env)
    size_incr = du(repo)
    r["clone"] = timed_rss(create + [f"{repo}::clone", str(wl / "clone.img")], env=env)
    size_clone = du(repo)
    target.mkdir()
    restore_step(r, ["borg", "extract", "--sparse", f"{repo}::full"], cwd=target, env=env)
    _check(target / str(wl / "base.img").lstrip("/"), wl / "base.img")
    return _result(r, size_full, size_incr, size_clone)


def run_cp(wl: Path, work: Path) -> dict:
    secs, rss, _ = timed_rss(["cp", "--sparse=always", str(wl / "base.img"), str(work / "copy.img")])
    return {"full": secs, "rss_full": rss}


def _check(restored: Path, original: Path) -> None:
    if subprocess.run(["cmp", "-s", str(restored), str(original)]).returncode != 0:
        raise RuntimeError(f"restore of {restored} is not identical")


def _result(r: dict, size_full: int, size_incr: int, size_clone: int) -> dict:
    out = {step: v[0] for step, v in r.items()}
    out.update({f"rss_{step}": v[1] for step, v in r.items() if v[1] is not None})
    out.update(repo_full=size_full, incr_growth=size_incr - size_full, clone_growth=size_clone - size_incr, repo_final=size_clone)
    return out


TOOLS = {
    "haven": run_haven,
    "restic": run_restic,
    "borg-lz4": lambda wl, w: run_borg(wl, w, "lz4"),
    "borg-zstd3": lambda wl, w: run_borg(wl, w, "zstd,3"),
    "cp-sparse": run_cp,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/haven-bench"))
    ap.add_argument("--tools", default=",".join(TOOLS))
    a = ap.parse_args()
    wl = a.work / "workload"
    info = generate(wl, int(a.size_gib * GiB), a.seed) if not (wl / "workload.json").exists() else json.loads((wl / "workload.json").read_text())
    print("workload", json.dumps(info), flush=True)
    runs: dict[str, list[dict]] = {t: [] for t in a.tools.split(",")}
    for i in range(a.repeat):
        for tool in runs:
            work = a.work / "runs" / f"{tool}-{i}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            res = TOOLS[tool](wl, work)
            runs[tool].append(res)
            print(tool, i, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in runs.items()}
    (a.work / "results.json").write_text(json.dumps({"workload": info, "runs": runs, "median": med}, indent=1))
    print_table(med)


def print_table(med: dict) -> None:
    MiB = 1 << 20
    rows = [("full backup s", "full", 1), ("incremental s", "incremental", 1), ("clone s", "clone", 1),
            ("restore s", "restore", 1), ("restore + sync s", "restore_durable", 1), ("repo after full MiB", "repo_full", MiB),
            ("incremental growth MiB", "incr_growth", MiB), ("clone growth MiB", "clone_growth", MiB),
            ("peak RSS full MiB", "rss_full", MiB), ("peak RSS restore MiB", "rss_restore", MiB)]
    tools = list(med)
    print("| metric | " + " | ".join(tools) + " |")
    print("|---" * (len(tools) + 1) + "|")
    for label, key, div in rows:
        cells = [f"{med[t][key] / div:.2f}" if key in med[t] else "-" for t in tools]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "haven" in med:
        print("\nratios (other / haven; > 1 means Haven is faster or smaller):")
        for t in tools:
            if t == "haven":
                continue
            parts = [f"{k} {med[t][k] / med['haven'][k]:.2f}x" for k in ("full", "incremental", "clone", "restore", "restore_durable", "repo_full", "incr_growth")
                     if k in med[t] and med["haven"].get(k)]
            print(f"  {t}: " + ", ".join(parts))


if __name__ == "__main__":
    main()

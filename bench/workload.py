"""Seeded workload images for the benchmarks (issue 3).

``base``   a sparse raw image: ~40% holes, ~35% compressible (text-like), ~25% random, in runs of
           64 KiB - 8 MiB;
``next``   a copy of ``base`` with 1% of the image size rewritten in scattered 4 KiB - 1 MiB pieces
           (4 KiB-aligned); the rewritten ranges go to ``next.changed.json`` (the "dirty bitmap");
``clone``  a copy of ``base`` with 2% changed the same way (another VM made from the same template).

    python -m bench.workload DIR --size-gib 4 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
WORDS = (b"the of and to in is for on that by with as at from kernel systemd nginx postgres user root log "
         b"error warning info debug config /usr/lib /var/log/syslog GET POST 200 404 HTTP/1.1 " +
         b"".join(b"%d " % i for i in range(0, 2000, 7))).split()


def _text_pool(rng: random.Random, size: int = 32 * MiB) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = b" ".join(rng.choices(WORDS, k=rng.randrange(4, 16)))
        out += b"%08x %s\n" % (rng.getrandbits(32), line)
    return bytes(out[:size])


def make_base(path: Path, size: int, seed: int) -> dict:
    rng = random.Random(seed)
    pool = _text_pool(rng)
    stats = {"hole": 0, "text": 0, "random": 0}
    with open(path, "wb") as fh:
        fh.truncate(size)
        pos = 0
        while pos < size:
            n = min(size - pos, rng.randrange(64 * KiB, 8 * MiB, 4 * KiB))
            r = rng.random()
            kind = "hole" if r < 0.40 else "text" if r < 0.75 else "random"
            if kind != "hole":
                fh.seek(pos)
                if kind == "random":
                    fh.write(rng.randbytes(n))
                else:
                    for off in range(0, n, MiB):
                        m = min(MiB, n - off)
                        start = rng.randrange(len(pool) - m)
                        fh.write(pool[start : start + m])
            stats[kind] += n
            pos += n
    return stats


def make_changed(base: Path, out: Path, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Copy ``base`` sparsely to ``out`` and rewrite ``fraction`` of its size in scattered pieces."""
    subprocess.run(["cp", "--sparse=always", str(base), str(out)], check=True)
    rng = random.Random(seed)
    size = base.stat().st_size
    budget, changed = int(size * fraction), []
    with open(out, "r+b") as fh:
        while budget > 0:
            n = min(budget, rng.randrange(4 * KiB, MiB + 1, 4 * KiB))
            off = rng.randrange(0, size - n, 4 * KiB)
            fh.seek(off)
            fh.write(rng.randbytes(n) if rng.random() < 0.5 else bytes(rng.choices(b"abcdef \n", k=n)))
            changed.append((off, n))
            budget -= n
    return sorted(changed)


def generate(folder: Path, size: int, seed: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    base, nxt, clone = folder / "base.img", folder / "next.img", folder / "clone.img"
    stats = make_base(base, size, seed)
    changed = make_changed(base, nxt, 0.01, seed + 1)
    (folder / "next.changed.json").write_text(json.dumps(changed))
    clone_changed = make_changed(base, clone, 0.02, seed + 2)
    (folder / "clone.changed.json").write_text(json.dumps(clone_changed))
    info = {"size": size, "seed": seed, "composition": stats,
            "allocated": os.stat(base).st_blocks * 512, "next_changed": sum(n for _, n in changed)}
    (folder / "workload.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(generate(a.folder, int(a.size_gib * GiB), a.seed), indent=1))


if __name__ == "__main__":
    main()

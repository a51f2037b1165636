"""A second synthetic disk with a different mix from ``workload.py`` (issue 19): ~40% holes, ~35%
compressible data of several kinds, ~25% random, in extents of odd lengths at odd offsets (not
aligned to chunks, pages or sectors), and no compressible byte range repeated anywhere (each text
line carries fresh random fields, so neither fixed nor content-defined chunks find duplicates).

Kinds of compressible data: log-like lines, CSV-like records, JSON-like documents, a little-endian
integer table (counters), and sparse-ish binary (mostly zero bytes with scattered values).

    python -m bench.mixgen OUT.img --size-gib 4 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import struct
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu GET POST PUT /api/v1/items "
         "/var/lib/postgresql ERROR WARN INFO DEBUG session user=alice user=bob status=200 status=503").split()


def _log(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += b"2026-%02d-%02dT%02d:%02d:%02d.%06dZ host%03d %s[%d]: %s id=%016x\n" % (
            rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24), rng.randrange(60), rng.randrange(60),
            rng.randrange(10**6), rng.randrange(256), rng.choice(WORDS).encode(), rng.randrange(1, 65536),
            " ".join(rng.choices(WORDS, k=rng.randrange(3, 12))).encode(), rng.getrandbits(64))
    return bytes(out[:n])


def _csv(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += b"%d,%s,%.4f,%d,%s\n" % (rng.getrandbits(40), rng.choice(WORDS).encode(), rng.uniform(-1e4, 1e4),
                                        rng.randrange(1000), rng.randbytes(6).hex().encode())
    return bytes(out[:n])


def _json(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        doc = {"id": rng.getrandbits(48), "name": rng.choice(WORDS), "tags": rng.sample(WORDS, 3),
               "score": round(rng.random() * 100, 3), "ok": rng.random() < 0.5}
        out += json.dumps(doc).encode() + b"\n"
    return bytes(out[:n])


def _counters(rng: random.Random, n: int) -> bytes:
    base = rng.getrandbits(32)
    vals = [base + i * rng.randrange(1, 4) for i in range(n // 8 + 1)]
    return struct.pack(f"<{len(vals)}Q", *vals)[:n]


def _sparse_binary(rng: random.Random, n: int) -> bytes:
    buf = bytearray(n)
    for _ in range(n // 64):
        buf[rng.randrange(n)] = rng.randrange(1, 256)
    return bytes(buf)


KINDS = [_log, _csv, _json, _counters, _sparse_binary]


def generate(path: Path, size: int, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {"hole": 0, "compressible": 0, "random": 0}
    with open(path, "wb") as fh:
        fh.truncate(size)
        pos = rng.randrange(1, 4 * KiB)  # the first extent starts off any boundary
        while pos < size:
            n = min(size - pos, rng.randrange(3 * KiB, 6 * MiB) | 1)  # odd lengths: nothing stays aligned
            r = rng.random()
            kind = "hole" if r < 0.40 else "compressible" if r < 0.75 else "random"
            if kind != "hole":
                fh.seek(pos)
                for off in range(0, n, MiB):
                    m = min(MiB, n - off)
                    fh.write(rng.randbytes(m) if kind == "random" else rng.choice(KINDS)(rng, m))
            stats[kind] += n
            pos += n
    return stats


def rewrite_fraction(path: Path, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Rewrite ``fraction`` of the file in scattered pieces (for a stopped-image incremental)."""
    rng = random.Random(seed)
    size = path.stat().st_size
    budget, out = int(size * fraction), []
    with open(path, "r+b") as fh:
        while budget > 0:
            n = min(budget, rng.randrange(4 * KiB, MiB))
            off = rng.randrange(0, size - n)
            fh.seek(off)
            fh.write(rng.randbytes(n) if rng.random() < 0.5 else _log(rng, n))
            out.append((off, n))
            budget -= n
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    print(json.dumps(generate(a.out, int(a.size_gib * GiB), a.seed)))


if __name__ == "__main__":
    main()

"""The allocator settings for data-moving processes apply on glibc and stand back when the
operator set ``MALLOC_*`` variables."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "from haven.engine.allocator import keep_chunk_buffers; print(keep_chunk_buffers())"


def _probe(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_applies_on_glibc():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _probe(env) == "True"


def test_leaves_operator_settings_alone():
    assert _probe({**os.environ, "MALLOC_ARENA_MAX": "2"}) == "False"

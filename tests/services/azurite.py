"""Azurite (Azure Blob emulator from npm) as a pytest fixture: ``azurite`` yields a connection string."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ._util import require, start, stop

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> str:
    """Start Azurite's blob service in memory on a free port; yields its connection string."""
    require(AZURITE.exists(), f"{AZURITE} (run scripts/setup-node.sh)")
    folder = tmp_path_factory.mktemp("azurite")
    log = folder / "azurite.log"
    proc = start([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                  "--extentMemoryLimit", "512", "--skipApiVersionCheck", "--loose", "--disableTelemetry"], log, cwd=folder)
    try:
        port = _wait_port(log, proc)
        yield connection_string(port)
    finally:
        stop(proc)


def _wait_port(log: Path, proc, timeout: float = 30.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = re.search(r"successfully listens on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"azurite exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError("azurite did not start")

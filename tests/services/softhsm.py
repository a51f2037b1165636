"""A throwaway SoftHSM token: its own config and token directory, found by label."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.services._util import require

__all__ = ["SoftHsm", "find_module"]


def find_module() -> str | None:
    for pattern in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/*/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"):
        found = glob.glob(pattern)
        if found:
            return found[0]
    return None


class SoftHsm:
    def __init__(self, pin: str = "8765", so_pin: str = "4321"):
        self.module = find_module()
        require(self.module is not None and shutil.which("softhsm2-util") is not None, "SoftHSM (apt-get install softhsm2)")
        try:
            import pkcs11  # noqa: F401
        except ImportError:
            require(False, "python-pkcs11 (pip install python-pkcs11)")
        self.dir = Path(tempfile.mkdtemp(prefix="haven-softhsm-"))
        (self.dir / "tokens").mkdir()
        self.conf = self.dir / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        self.label = "haven-" + uuid.uuid4().hex[:8]
        self.pin, self.so_pin = pin, so_pin
        self._old = os.environ.get("SOFTHSM2_CONF")

    def start(self) -> "SoftHsm":
        os.environ["SOFTHSM2_CONF"] = str(self.conf)  # read by the library when it loads a token list
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", self.label, "--so-pin", self.so_pin, "--pin", self.pin],
                       check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(self.conf)})
        return self

    def stop(self) -> None:
        if self._old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._old
        shutil.rmtree(self.dir, ignore_errors=True)

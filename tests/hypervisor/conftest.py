"""Fixtures of the hypervisor tests: the real test guest under QEMU, image-folder VMs around it.

The guest is built once and cached (tests/services/testvm.py); each test module boots what it
needs once. Unix socket paths must stay short, so VM folders live in /tmp/hv-*, not in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.services import testvm  # noqa: E402
from tests.services._util import require  # noqa: E402

from haven.engine.source import DiskSource  # noqa: E402


@pytest.fixture(scope="session")
def guest_images() -> testvm.GuestImages:
    ok, why = testvm.qemu_available()
    require(ok, why)
    try:
        import nbd  # noqa: F401
    except ImportError:
        require(False, "python3-libnbd is not linked into the venv (run scripts/setup-python.sh)")
    return testvm.ensure_images()


@pytest.fixture(scope="module")
def vm_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def make_folder_vm(root: Path, name: str, images: testvm.GuestImages, *, agent: bool = True, fmt: str = "qcow2",
                   agent_channel: bool = True, extra: dict | None = None) -> Path:
    """A folder VM with one root disk ``vda`` and vm.json naming its QMP (and guest-agent) sockets."""
    folder = root / name
    folder.mkdir(parents=True)
    testvm.new_disk(images, folder / f"vda.{fmt}", agent=agent, fmt=fmt)
    definition = {
        "name": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"haven-test-vm:{name}")),
        "disks": [{"name": "vda", "file": f"vda.{fmt}", "format": fmt}],
        "nics": [{"mac": "52:54:00:00:00:01", "network": "default", "model": "virtio"}],
        "memory_mib": 256,
        "vcpus": 1,
        "qmp_socket": "run/qmp.sock",
        **(extra or {}),
    }
    if agent_channel:
        definition["qga_socket"] = "run/qga.sock"
    (folder / "vm.json").write_text(json.dumps(definition, indent=1))
    return folder


def boot_folder_vm(images: testvm.GuestImages, folder: Path, fmt: str = "qcow2") -> testvm.RunningGuest:
    return testvm.boot(images, folder / f"vda.{fmt}", folder / "run", fmt=fmt)


def copy_to_raw(src: DiskSource, dest: Path, chunk: int = 4 << 20) -> int:
    """Write the source's data extents into a sparse raw file; returns the bytes read."""
    read = 0
    with open(dest, "wb") as f:
        f.truncate(src.size)
        for e in src.data_extents():
            pos = e.offset
            while pos < e.end:
                n = min(chunk, e.end - pos)
                f.seek(pos)
                f.write(src.read(pos, n))
                read += n
                pos += n
    return read


def extent_bytes(extents) -> int:
    return sum(e.length for e in extents)

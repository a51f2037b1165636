"""``haven serve --demo`` (what ``make run`` starts): a real running guest backed up where QEMU runs, the
disk-only sample VM elsewhere, with the reason printed.

The live demo boots the project's test guest as an image-folder VM, writes a file in it through its guest
agent, backs the running guest up, restores its disk and reads the file back; the test reads the restored disk
itself and asks the CLI for the point.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from tests.services import testvm
from tests.services._util import start
from tests.services.haven_server import HavenServer, run_cli as run

# the demo's last line: the live guest shut down after its restore, the sample VM's comparison, or a failure
DONE = re.compile(r"\[demo\] (failed: |live-vm is shut down|restored disk is byte-identical|RESTORED DISK DIFFERS)")


class DemoServer(HavenServer):
    """``haven serve --demo`` on a free port; ``wait_demo`` returns its log once the demo has finished."""

    def start(self, timeout: float = 60.0) -> "DemoServer":
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", self.module, "serve", "--demo", "--home", str(self.home), "--port", str(self.port)]
        self.proc = start(cmd, self.home / "server.log", env=self.env)
        return self

    def wait_demo(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while True:
            log = (self.home / "server.log").read_text(errors="replace")
            if DONE.search(log):
                time.sleep(1)  # a failure's shutdown line comes right after
                return (self.home / "server.log").read_text(errors="replace")
            assert self.proc.poll() is None, log[-3000:]
            assert time.monotonic() < end, log[-3000:]
            time.sleep(0.5)


def _server(home: Path, **env: str) -> DemoServer:
    return DemoServer(home, env={"HAVEN_HYPERVISORS": f"folder://{home / 'vms'}", **env})


@pytest.mark.vm
def test_the_demo_backs_up_a_running_guest_and_reads_its_file_back(guest_images, tmp_path):
    home = Path(tmp_path / "h")  # the guest's sockets live under the VM folder: keep the path short
    server = _server(home).start()
    try:
        log = server.wait_demo(420)
        assert "the file written in the running guest came back from the restore" in log, log[-3000:]
        written = re.search(r"wrote /root/haven-demo\.txt inside live-vm through its guest agent: (.+)", log).group(1)
        assert "backing up the disk-only sample VM" not in log
        points = run(server, "recoverypoint", "list", "-s", "default", "-v", "vault-local", "--vm", "live-vm")
        assert len(points) == 1 and points[0]["consistency"] != "CrashConsistent", points  # backed up while running
        restored = next((home / "restores").glob("live-vm-*")) / "vda.raw"
        assert testvm.fs_cat(restored, "/root/haven-demo.txt") == f"{written}\n".encode()
        assert "live-vm is shut down" in log
        run(server, "vm", "refresh")
        vm = next(v for v in run(server, "vm", "list") if v["name"] == "live-vm")
        assert vm["power_state"] == "stopped", vm  # no QEMU outlives the demo
    finally:
        server.stop()


def test_without_a_guest_image_the_demo_says_why_and_backs_up_the_sample_vm(tmp_path):
    ok, why = testvm.qemu_available()
    home = Path(tmp_path / "h")
    # the guest cannot be built where its cache folder cannot be made
    server = _server(home, HAVEN_TESTVM_DIR="/proc/haven-no-guest").start()
    try:
        log = server.wait_demo(180)
        assert "restored disk is byte-identical to the original" in log, log[-3000:]
        reason = (why if not ok else "the test guest could not be built or booted")
        assert f"no running guest for the demo ({reason}" in log, log[-3000:]
        assert "backing up the disk-only sample VM instead" in log
        assert "live-vm" not in {v["name"] for v in run(server, "vm", "list")}
    finally:
        server.stop()

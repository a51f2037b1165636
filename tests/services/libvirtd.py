"""Start and stop libvirtd (with virtlogd) on a machine without systemd, for the libvirt tests.

``start()`` reuses a libvirtd that already answers on ``qemu:///system`` (and then leaves it
running on ``stop()``); otherwise it starts ``virtlogd`` and ``libvirtd`` in the foreground as child
processes (logs in ``/var/tmp/haven-libvirtd``), waits until ``qemu:///system`` answers (about 8 s
here), and ``stop()`` ends exactly the processes it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Libvirtd", "start", "available", "URI"]

URI = "qemu:///system"
WORK = Path(os.environ.get("HAVEN_LIBVIRTD_DIR", "/var/tmp/haven-libvirtd"))


def available() -> tuple[bool, str]:
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return False, f"{tool} not on PATH (run scripts/setup-system.sh)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False, "libvirt-python is not installed (pip install libvirt-python)"
    if os.geteuid() != 0:
        return False, "the libvirt tests start qemu:///system and need root"
    return True, ""


def _answers(uri: str = URI) -> bool:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getLibVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


@dataclass
class Libvirtd:
    uri: str = URI
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)  # what we started

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the daemons this object started (libvirtd first), each by its own process group."""
        for _what, proc in reversed(self.started):
            if proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        self.started.clear()


def _kvm_device_as_debian_sets_it() -> None:
    """Give /dev/kvm the owner and mode Debian's udev rule gives it (root:kvm 0660).

    Without udev (containers) it is root:root 0600: libvirt then finds KVM "enabled when probing but
    not available now", throws its QEMU capabilities away at every lookup and re-probes QEMU (4 s
    each), which makes one defineXML take over a minute. TCG-only machines are affected too.
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists() or os.geteuid() != 0:
        return
    try:
        import grp

        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    st = kvm.stat()
    if st.st_gid != gid or (st.st_mode & 0o060) != 0o060:
        os.chown(kvm, -1, gid)
        os.chmod(kvm, 0o660)


def start(timeout: float = 60.0) -> Libvirtd:
    """Reuse a libvirtd that answers, or start virtlogd and libvirtd in the foreground as our children."""
    _kvm_device_as_debian_sets_it()
    if _answers():
        return Libvirtd()
    WORK.mkdir(parents=True, exist_ok=True)
    daemon = Libvirtd()
    for what, cmd in (("virtlogd", ["virtlogd"]), ("libvirtd", ["libvirtd"])):
        log = open(WORK / f"{what}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        daemon.started.append((what, proc))
    end = time.monotonic() + timeout
    while not _answers():
        for what, proc in daemon.started:
            if proc.poll() is not None:
                daemon.stop()
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {WORK / (what + '.log')}")
        if time.monotonic() > end:
            daemon.stop()
            raise TimeoutError(f"libvirtd did not answer on {URI} within {timeout}s")
        time.sleep(0.2)
    return daemon

"""Haven's test guest: a tiny Linux VM built from Debian packages, booted under QEMU (TCG).

The guest is the Debian cloud kernel, a busybox initramfs that loads the virtio modules and switches
to an ext4 root disk, and on that disk busybox init plus ``qemu-guest-agent`` and its libraries.
The root disk is made with ``mkfs.ext4 -d`` (no loop device, no chroot). Two root disks are built:
one that starts the guest agent, and one that does not (same virtio-serial channel, nobody answering).

Everything built is cached under ``HAVEN_TESTVM_DIR`` (default ``/var/tmp/haven-testvm``) in a folder
named after a hash of the recipe, so a second run only checks that the files are there; downloaded
``.deb`` files are kept in ``debs/`` beside it.

It is part of the package so that ``haven serve --demo`` can back up a real running guest (``haven.demo``);
the tests reach it as ``tests.services.testvm``. It needs Debian's ``apt-get``/``dpkg-deb`` (packages from the
distribution's archive only), ``mkfs.ext4``, ``debugfs``, ``cpio`` and QEMU (``qemu_available`` says what is missing).

Use from tests::

    images = testvm.ensure_images()              # builds once (10-20 s), then cached
    disk = testvm.new_disk(images, tmp / "vm.qcow2")
    vm = testvm.boot(images, disk, tmp / "run")  # QMP + guest-agent sockets in tmp/run
    vm.wait_for_agent()
    vm.shell("echo hi > /root/x")
    vm.stop()

or from a shell: ``python -m haven.testguest build|boot DISK RUNDIR`` (``scripts/build-testvm.sh``).

Size: one recipe (the guest's boot scripts as text, the packages, the build) and its runner belong together:
the recipe's hash names the cache, and the runner boots exactly what the recipe built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GuestImages",
    "RunningGuest",
    "ensure_images",
    "new_disk",
    "boot",
    "qemu_available",
    "fs_cat",
    "DEFAULT_DIR",
]

DEFAULT_DIR = Path(os.environ.get("HAVEN_TESTVM_DIR", "/var/tmp/haven-testvm"))  # nosec B108 - a cache of the built test guest, run as root by make test / make run; outlives reboots unlike /tmp
ROOT_SIZE = "128M"

# Guest packages besides the kernel: the agent, what it links against, and busybox.
GUEST_PACKAGES = [
    "qemu-guest-agent", "libc6", "libglib2.0-0", "libpcre2-8-0", "libudev1", "libnuma1", "liburing2",
    "busybox-static",
]
# virtio_ring must be loaded before virtio, or insmod fails with "unknown symbol".
VIRTIO_MODULES = [
    "virtio/virtio_ring", "virtio/virtio", "virtio/virtio_pci_legacy_dev", "virtio/virtio_pci_modern_dev",
    "virtio/virtio_pci", "block/virtio_blk", "char/virtio_console",
]

INITTAB = """\
::sysinit:/etc/rc
{agent_line}ttyS0::respawn:/bin/sh -l
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
::shutdown:/bin/mount -o remount,ro /
"""
RC = """\
#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
hostname havenguest
echo "haven-testvm: rc done at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
"""
# No udev in the guest: find the agent's port by its name; keep its state on tmpfs, never on the
# file system it freezes.
AGENT_START = """\
#!/bin/sh
for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && PORT=/dev/${p##*/}
done
[ -n "$PORT" ] || { echo "haven-testvm: no guest agent port" > /dev/console; sleep 5; exit 1; }
echo "haven-testvm: qemu-ga on $PORT at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
exec /usr/sbin/qemu-ga -m virtio-serial -p "$PORT" -t /run
"""
# qemu-ga's guest-shutdown runs /sbin/shutdown, which busybox lacks.
SHUTDOWN = '#!/bin/sh\ncase "$1" in -r) exec reboot ;; *) exec poweroff ;; esac\n'
INITRAMFS_INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 250 ]; do usleep 20000; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || {{ echo "cannot mount /dev/vda"; exec sh; }}
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


def _recipe() -> dict:
    return {
        "v": 1,
        "root_size": ROOT_SIZE,
        "packages": GUEST_PACKAGES,
        "modules": VIRTIO_MODULES,
        "files": [INITTAB, RC, AGENT_START, SHUTDOWN, INITRAMFS_INIT],
    }


def recipe_hash(kernel_package: str) -> str:
    blob = json.dumps({**_recipe(), "kernel": kernel_package}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class GuestImages:
    kernel: Path
    initrd: Path
    root: Path  # qcow2, guest agent starts at boot
    root_noagent: Path  # qcow2, same but no guest agent running
    key: str


def qemu_available() -> tuple[bool, str]:
    for tool in ("qemu-system-x86_64", "qemu-img", "qemu-nbd", "mkfs.ext4", "debugfs", "cpio", "dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            return False, f"{tool} not on PATH (run scripts/setup-system.sh)"
    return True, ""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def _kernel_package() -> str:
    def lookup() -> str | None:
        out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-"):
                return line.split()[1]
        return None

    pkg = lookup()
    if pkg is None:
        _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        pkg = lookup()
    if pkg is None:
        raise RuntimeError("cannot find the Debian cloud kernel package (apt-cache depends linux-image-cloud-amd64)")
    return pkg


def _download(debs: Path, packages: list[str]) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    missing = []
    for p in packages:
        hits = sorted(debs.glob(f"{p}_*.deb"))
        if hits:
            found[p] = hits[-1]
        else:
            missing.append(p)
    if missing:
        _run(["apt-get", "download", "-q", *missing], cwd=debs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in missing:
            hits = sorted(debs.glob(f"{p}_*.deb"))
            if not hits:
                raise RuntimeError(f"apt-get download {p} gave no .deb")
            found[p] = hits[-1]
    return found


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _build(out: Path, kernel_pkg: str, debs: dict[str, Path]) -> None:
    stage = out / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    kx, rootfs, initrd = stage / "kernel", stage / "rootfs", stage / "initrd"
    for d in (kx, rootfs, initrd):
        d.mkdir(parents=True)
    kver = kernel_pkg.removeprefix("linux-image-")
    _run(["dpkg-deb", "-x", str(debs[kernel_pkg]), str(kx)])
    shutil.copy(kx / "boot" / f"vmlinuz-{kver}", out / "vmlinuz")
    moddir = kx / "lib" / "modules" / kver / "kernel" / "drivers"

    # root file system
    for p in GUEST_PACKAGES:
        _run(["dpkg-deb", "-x", str(debs[p]), str(rootfs)])
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian", "lib/systemd",
                 "usr/lib/systemd", "etc/init.d"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    for d in ("bin", "sbin", "proc", "sys", "dev", "run", "tmp", "root", "var/lib"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([str(rootfs / "bin/busybox"), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a == "busybox":
            continue
        where = "sbin" if a in ("init", "halt", "poweroff", "reboot", "switch_root", "mdev") else "bin"
        link = rootfs / where / a
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    if not (rootfs / "var/run").exists():
        (rootfs / "var/run").symlink_to("/run")
    _write(rootfs / "etc/rc", RC, 0o755)
    _write(rootfs / "etc/haven-qga.sh", AGENT_START, 0o755)
    _write(rootfs / "sbin/shutdown", SHUTDOWN, 0o755)
    _write(rootfs / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _write(rootfs / "etc/group", "root:x:0:\n")
    _write(rootfs / "etc/profile", "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n")

    for variant, agent_line in (("root.qcow2", "::respawn:/etc/haven-qga.sh\n"), ("root-noagent.qcow2", "")):
        _write(rootfs / "etc/inittab", INITTAB.format(agent_line=agent_line))
        raw = stage / "root.raw"
        raw.unlink(missing_ok=True)
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", str(rootfs), str(raw), ROOT_SIZE],
             stdout=subprocess.DEVNULL)
        _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out / variant)])
        raw.unlink()

    # initramfs
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
        (initrd / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(rootfs / "bin/busybox", initrd / "bin/busybox")
    for m in VIRTIO_MODULES:
        shutil.copy(moddir / f"{m}.ko", initrd / "lib/modules")
    names = " ".join(m.rsplit("/", 1)[1] for m in VIRTIO_MODULES)
    _write(initrd / "init", INITRAMFS_INIT.format(modules=names), 0o755)
    files = subprocess.run(["find", "."], cwd=initrd, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=initrd, input=files, capture_output=True,
                          check=True).stdout
    import gzip

    (out / "initrd.gz").write_bytes(gzip.compress(cpio, compresslevel=1))
    shutil.rmtree(stage)


def ensure_images(workdir: Path | None = None) -> GuestImages:
    """Build the guest once (cached by recipe hash); safe to call from several processes at once."""
    base = Path(workdir or DEFAULT_DIR)
    base.mkdir(parents=True, exist_ok=True)
    kernel_pkg = _kernel_package()
    key = recipe_hash(kernel_pkg)
    out = base / key
    images = GuestImages(out / "vmlinuz", out / "initrd.gz", out / "root.qcow2", out / "root-noagent.qcow2", key)
    done = out / "DONE"
    if done.exists():
        return images
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return images
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        debs = _download(base / "debs", [kernel_pkg, *GUEST_PACKAGES])
        _build(out, kernel_pkg, debs)
        done.write_text(json.dumps({**_recipe(), "kernel": kernel_pkg}, indent=1))
    return images


def new_disk(images: GuestImages, path: Path, *, agent: bool = True, fmt: str = "qcow2") -> Path:
    """A fresh, writable root disk for one VM: a standalone copy of the cached image (qcow2 or raw)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    src = images.root if agent else images.root_noagent
    _run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", fmt, str(src), str(path)])
    return path


@dataclass
class RunningGuest:
    process: subprocess.Popen
    rundir: Path
    disk: Path
    qmp_socket: Path
    qga_socket: Path
    console: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def agent(self, timeout: float = 90.0):
        from haven.hypervisor.qga import GuestAgent

        return GuestAgent(str(self.qga_socket), timeout=timeout)

    def qmp(self, timeout: float = 60.0):
        from haven.hypervisor.qmp import QmpClient

        return QmpClient(str(self.qmp_socket), timeout=timeout)

    def wait_for_agent(self, timeout: float = 180.0) -> float:
        """Wait until the guest agent answers; returns the seconds it took."""
        from haven.hypervisor.qga import GuestAgentError

        t0 = time.monotonic()
        while True:
            if not self.alive():
                raise RuntimeError(f"QEMU exited ({self.process.returncode}); console:\n{self.console_text()}")
            try:
                with self.agent(timeout=min(10.0, timeout)) as ga:
                    ga.ping()
                return time.monotonic() - t0
            except GuestAgentError:
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"guest agent silent after {timeout}s; console:\n{self.console_text()}")
                time.sleep(0.5)

    def wait_for_console(self, text: str, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.console_text():
            if not self.alive() or time.monotonic() > end:
                raise TimeoutError(f"{text!r} not on the console; console:\n{self.console_text()}")
            time.sleep(0.2)

    def shell(self, script: str, timeout: float = 120.0) -> str:
        """Run a shell command in the guest through the guest agent; returns stdout, raises on failure."""
        with self.agent() as ga:
            res = ga.shell(script, timeout=timeout)
        if not res.ok:
            raise RuntimeError(f"guest command failed ({res.exitcode}): {script}\n{res.stderr}")
        return res.stdout

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 60.0) -> None:
        """Clean power-off through the guest agent (sync, unmount), then kill if it does not stop."""
        if not self.alive():
            return
        try:
            with self.agent(timeout=10.0) as ga:
                ga.shutdown()
            self.process.wait(timeout)
        except Exception:
            self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(30)


def boot(
    images: GuestImages,
    disk: Path,
    rundir: Path,
    *,
    fmt: str | None = None,
    memory_mib: int = 256,
    node_name: str = "disk0",
) -> RunningGuest:
    """Boot a root disk under TCG. The block graph is ``<node>-file`` (file) <- ``<node>`` (format) <- virtio-blk."""
    disk, rundir = Path(disk).resolve(), Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    qmp, qga, console = rundir / "qmp.sock", rundir / "qga.sock", rundir / "console.log"
    for p in (qmp, qga, console):
        p.unlink(missing_ok=True)
    fmt = fmt or ("raw" if disk.suffix in (".raw", ".img") else "qcow2")
    cmd = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(memory_mib), "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(images.kernel), "-initrd", str(images.initrd),
        "-append", "console=ttyS0 root=/dev/vda rw quiet panic=-1",
        "-blockdev", json.dumps({"driver": "file", "filename": str(disk), "node-name": f"{node_name}-file"}),
        "-blockdev", json.dumps({"driver": fmt, "file": f"{node_name}-file", "node-name": node_name}),
        "-device", f"virtio-blk-pci,drive={node_name},id=vblk0",
        "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]
    log = open(rundir / "qemu.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    end = time.monotonic() + 30
    while not (qmp.exists() and qga.exists()):
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode}: {(rundir / 'qemu.log').read_text()}")
        if time.monotonic() > end:
            proc.kill()
            raise TimeoutError("QEMU did not create its sockets")
        time.sleep(0.05)
    return RunningGuest(proc, rundir, disk, qmp, qga, console)


def fs_cat(image_bytes_path: Path, path: str) -> bytes | None:
    """Read one file out of a raw ext4 image offline with debugfs (no mount, no journal replay)."""
    res = subprocess.run(["debugfs", "-R", f"cat {path}", str(image_bytes_path)], capture_output=True)
    if res.returncode != 0 or b"File not found" in res.stderr:
        return None
    return res.stdout


def _main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "build"
    t0 = time.monotonic()
    images = ensure_images()
    print(f"guest images ({time.monotonic() - t0:.1f}s): {images}")
    if what == "boot":
        disk, rundir = Path(argv[2]), Path(argv[3])
        vm = boot(images, disk, rundir)
        print(f"guest agent answered after {vm.wait_for_agent():.1f}s; pid {vm.pid}")
        print(json.dumps({"qmp": str(vm.qmp_socket), "qga": str(vm.qga_socket), "console": str(vm.console)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main(sys.argv))


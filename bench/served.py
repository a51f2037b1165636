"""The user's path, measured (issue 19): ``haven serve`` and ``haven agent`` driven through the CLI,
against restic, borg and virtnbdbackup on the same data, with the engine alone as the floor.

    python -m bench.served [--quick] [--repeat 3] [--size-gib 2] [--live-gib 1] [--work /var/tmp/haven-bench-served]

Stopped VMs (image files; one folder VM per workload and repetition, the image hard-linked in):
``haven protection backup-now --wait`` and ``haven restore restore-disks --wait`` against a
``haven serve`` on a folder vault, the engine alone (``bench/haven_run.py``, one process per step),
restic and borg (lz4) on the image file. Workloads: ``synthetic`` (bench/workload.py), ``mixed``
(bench/mixgen.py), ``ext4-usr`` (``mkfs.ext4 -d`` of a tree of this machine's /usr), ``guest``
(the project's test guest's root disk).

Running VM (libvirt, ``qemu:///system``): the test guest with a second qcow2 disk holding the
``mixed`` data, backed up by ``haven agent --adapter qemu:///system`` (its own process) and by
virtnbdbackup (with and without ``-z``), full and incremental; between full and incremental 1%
of the data disk is rewritten inside the guest (``dd`` through the guest agent), so QEMU's dirty
bitmaps of both tools see it; restores by ``haven restore restore-disks`` and ``virtnbdrestore``.

Before every timed step the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``;
where that is not allowed, the step's own files are evicted with ``posix_fadvise(DONTNEED)``).
Every tool starts each repetition from an empty repository. Medians and ratios are printed and
written with every single run to ``results.json`` in the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "RESTIC_PASSWORD": "bench", "BORG_PASSPHRASE": "bench", "RESTIC_PROGRESS_FPS": "0.1",
       "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
MiB, GiB = 1 << 20, 1 << 30
SUB = "bench"
TERMINAL = ("Completed", "CompletedWithWarnings", "Failed", "Cancelled")


# ---------------------------------------------------------------- the page cache


class Cache:
    """Drops the page cache before a timed step: the whole cache when the kernel lets us, else the
    pages of the files under ``fallback`` folders."""

    def __init__(self, fallback: list[Path]):
        self.fallback = fallback
        self.method = "drop_caches" if self._drop_all() else "fadvise"

    @staticmethod
    def _drop_all() -> bool:
        subprocess.run(["sync"], check=True)
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            return True
        except OSError:
            return False

    def drop(self) -> None:
        if self.method == "drop_caches" and self._drop_all():
            time.sleep(0.5)
            return
        for root in self.fallback:
            for p in root.rglob("*"):
                if p.is_file():
                    try:
                        fd = os.open(p, os.O_RDONLY)
                    except OSError:
                        continue
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)
        time.sleep(0.5)


# ---------------------------------------------------------------- running things


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 3600) -> str:
    res = subprocess.run(cmd, env=env or ENV, cwd=cwd, capture_output=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"{cmd} failed ({res.returncode}): {res.stderr.decode()[-3000:]}{res.stdout.decode()[-1000:]}")
    return res.stdout.decode()


class RssPeak:
    """Samples the resident memory of a process (and its children) while a step runs."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _rss(self) -> int:
        total = 0
        pids = [self.pid]
        try:
            pids += [int(c) for c in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed(cache: Cache, cmd: list[str], env: dict | None = None, cwd: Path | None = None, watch: int | None = None) -> dict:
    """Drop the cache, run ``cmd``; wall seconds, peak RSS (of ``watch`` if given, else of the command
    itself via wait4) and stdout."""
    cache.drop()
    t0 = time.monotonic()
    if watch is not None:
        with RssPeak(watch) as peak:
            out = run(cmd, env=env, cwd=cwd)
        return {"s": time.monotonic() - t0, "rss": peak.peak, "out": out}
    wrapper = [PY, "-c", (
        "import sys,subprocess,resource;"
        "p=subprocess.run(sys.argv[1:]);"
        "sys.stderr.write('\\nPEAKRSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(p.returncode)")] + cmd
    res = subprocess.run(wrapper, env=env or ENV, cwd=cwd, capture_output=True)
    secs = time.monotonic() - t0
    err = res.stderr.decode()
    if res.returncode:
        raise RuntimeError(f"{cmd} failed: {err[-3000:]}")
    return {"s": secs, "rss": int(err.rsplit("PEAKRSS", 1)[1].split()[0]) * 1024, "out": res.stdout.decode()}


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


# ---------------------------------------------------------------- workloads


def build_workloads(work: Path, quick: bool, names: list[str], size: int) -> dict[str, Path]:
    """Each workload is a raw image ``<work>/workloads/<name>.img`` (built once, then reused)."""
    from bench import mixgen, workload

    folder = work / "workloads"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in names:
        img = folder / f"{name}-{size // MiB}m{'-quick' if quick else ''}.img"
        if not img.exists():
            print(f"building workload {name} ...", flush=True)
            tmp = img.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            if name == "synthetic":
                workload.make_base(tmp, size, 1)
            elif name == "mixed":
                mixgen.generate(tmp, size, 7)
            elif name == "ext4-usr":
                _ext4_of_usr(tmp, folder, quick)
            elif name == "guest":
                from tests.services import testvm

                images = testvm.ensure_images()
                run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k", str(images.root), str(tmp)])
            else:
                raise SystemExit(f"unknown workload {name}")
            tmp.rename(img)
        out[name] = img
    return out


def _ext4_of_usr(img: Path, folder: Path, quick: bool) -> None:
    """An ext4 file system holding real files of this machine: /usr/bin in quick mode; else /usr/bin,
    /usr/share and /usr/lib/x86_64-linux-gnu (hard-linked into one tree, for ``mkfs.ext4 -d``)."""
    trees = ["/usr/bin"] if quick else ["/usr/bin", "/usr/share", "/usr/lib/x86_64-linux-gnu"]
    stage = folder / "usr-stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    for t in trees:
        dest = stage / t.strip("/").replace("/", "_")
        if subprocess.run(["cp", "-al", t, str(dest)], capture_output=True).returncode:
            shutil.rmtree(dest, ignore_errors=True)
            run(["cp", "-a", t, str(dest)])
    used = int(run(["du", "-sb", str(stage)]).split()[0])
    size = (int(used * 1.3) + 256 * MiB) // MiB * MiB
    with open(img, "wb") as fh:
        fh.truncate(size)
    run(["mkfs.ext4", "-q", "-F", "-d", str(stage), str(img)])
    shutil.rmtree(stage, ignore_errors=True)


def describe(img: Path) -> dict:
    st = img.stat()
    return {"size": st.st_size, "allocated": st.st_blocks * 512}


# ---------------------------------------------------------------- haven serve


class Served:
    """A ``haven serve`` with a folder vault per (workload, repetition) and the workload images as
    stopped folder VMs."""

    def __init__(self, home: Path):
        self.home = home
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        from tests.services._util import free_port, start

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.home / "server.log"
        self.proc = start([PY, "-m", "haven.cli.main", "serve", "--home", str(self.home), "--port", str(port)], log,
                          env={"PYTHONPATH": ENV["PYTHONPATH"], "HAVEN_HOME": str(self.home)})
        end = time.monotonic() + 90
        import httpx

        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haven serve exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(log.read_text()[-3000:])

    def env(self) -> dict:
        return {**ENV, "HAVEN_HOME": str(self.home), "HAVEN_SERVER": self.url}

    def cli_cmd(self, *args: str) -> list[str]:
        return [PY, "-m", "haven.cli.main", "-o", "json", *args]

    def cli(self, *args: str) -> object:
        out = run(self.cli_cmd(*args), env=self.env())
        return json.loads(out) if out.strip() else None

    def stop(self) -> None:
        from tests.services._util import stop

        if self.proc is not None:
            stop(self.proc)


def _job_seconds(job: dict) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(job["ended_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _queued_seconds(job: dict) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _check_job(job: dict) -> dict:
    if job.get("status") not in ("Completed", "CompletedWithWarnings"):
        raise RuntimeError(f"job failed: {json.dumps(job)[:3000]}")
    return job


def served_backup(srv: Served, cache: Cache, vault: str, vm: str, host: str | None = None) -> dict:
    r = timed(cache, srv.cli_cmd("protection", "backup-now", "-s", SUB, "-v", vault, "--vm", vm, "--wait"),
              env=srv.env(), watch=srv.proc.pid)
    job = _check_job(json.loads(r["out"]))
    return {"s": r["s"], "job_s": _job_seconds(job), "queued_s": _queued_seconds(job), "rss": r["rss"], "job": job}


def served_restore(srv: Served, cache: Cache, vault: str, vm: str, point: str, target: Path, host: str | None = None) -> dict:
    args = ["restore", "restore-disks", "-s", SUB, "-v", vault, "--vm", vm, "-r", point, "--target-folder", str(target), "--wait"]
    if host:
        args += ["--host", host]
    r = timed(cache, srv.cli_cmd(*args), env=srv.env(), watch=srv.proc.pid)
    job = _check_job(json.loads(r["out"]))
    return {"s": r["s"], "job_s": _job_seconds(job), "queued_s": _queued_seconds(job), "rss": r["rss"], "job": job}


# ---------------------------------------------------------------- stopped VMs: one workload


def stopped_vm_round(name: str, img: Path, i: int, srv: Served, cache: Cache, work: Path) -> dict:
    """One repetition on one workload: Haven served, engine alone, restic, borg lz4."""
    res: dict[str, dict] = {}
    vm = f"{name}-{i}"
    vault = f"v-{name}-{i}"
    srv.cli("vault", "create", "-s", SUB, "-n", vault, "-l", "local")
    srv.cli("protection", "enable-for-vm", "-s", SUB, "-v", vault, "--vm", vm)
    storage = srv.home / "storage"
    before = du(storage)
    full = served_backup(srv, cache, vault, vm)
    stored = du(storage) - before
    point = full["job"]["result"]["recovery_point_id"]
    target = work / "restore-served"
    shutil.rmtree(target, ignore_errors=True)
    rest = served_restore(srv, cache, vault, vm, point, target)
    assert same(target / "vda.raw", img), f"served restore of {name} differs"
    res["haven-served"] = {"full": full["s"], "full_job": full["job_s"], "full_queued": full["queued_s"],
                           "restore": rest["s"], "restore_job": rest["job_s"], "restore_queued": rest["queued_s"],
                           "cli_start": timed(cache, srv.cli_cmd("version"), env=srv.env())["s"],
                           "stored": stored, "rss_full": full["rss"], "rss_restore": rest["rss"]}
    shutil.rmtree(target, ignore_errors=True)

    # the engine alone: one process per step, a local folder vault
    repo = work / "engine-repo"
    shutil.rmtree(repo, ignore_errors=True)
    h = [PY, "-m", "bench.haven_run"]
    run(h + ["init", str(repo)], cwd=ROOT)
    b = timed(cache, h + ["backup", str(repo), "vm", "p1", str(img)], cwd=ROOT)
    stored = du(repo)
    out = work / "restore-engine.img"
    r = timed(cache, h + ["restore", str(repo), "vm", "p1", str(out)], cwd=ROOT)
    assert same(out, img), f"engine restore of {name} differs"
    res["haven-engine"] = {"full": b["s"], "restore": r["s"], "stored": stored, "rss_full": b["rss"], "rss_restore": r["rss"]}
    out.unlink()
    shutil.rmtree(repo)

    # restic
    repo, target = work / "restic-repo", work / "restic-restore"
    for p in (repo, target):
        shutil.rmtree(p, ignore_errors=True)
    base = ["restic", "-r", str(repo), "--quiet"]
    run(base + ["init"])
    b = timed(cache, base + ["backup", "--json", str(img)])
    snap = [json.loads(line) for line in b["out"].splitlines() if '"snapshot_id"' in line][-1]["snapshot_id"]
    stored = du(repo)
    r = timed(cache, base + ["restore", snap, "--target", str(target)])
    t_sync = time.monotonic()
    run(["sync"])
    r_sync = r["s"] + time.monotonic() - t_sync
    assert same(target / str(img).lstrip("/"), img), f"restic restore of {name} differs"
    res["restic"] = {"full": b["s"], "restore": r["s"], "restore_sync": r_sync, "stored": stored, "rss_full": b["rss"],
                     "rss_restore": r["rss"]}
    shutil.rmtree(repo)
    shutil.rmtree(target)

    # borg lz4
    repo, target = work / "borg-repo", work / "borg-restore"
    for p in (repo, target):
        shutil.rmtree(p, ignore_errors=True)
    env = {**ENV, "BORG_BASE_DIR": str(work / "borgbase")}
    run(["borg", "init", "-e", "repokey", str(repo)], env=env)
    b = timed(cache, ["borg", "create", "--compression", "lz4", f"{repo}::full", str(img)], env=env)
    stored = du(repo)
    target.mkdir()
    r = timed(cache, ["borg", "extract", "--sparse", f"{repo}::full"], env=env, cwd=target)
    t_sync = time.monotonic()
    run(["sync"])
    r_sync = r["s"] + time.monotonic() - t_sync
    assert same(target / str(img).lstrip("/"), img), f"borg restore of {name} differs"
    res["borg-lz4"] = {"full": b["s"], "restore": r["s"], "restore_sync": r_sync, "stored": stored, "rss_full": b["rss"],
                       "rss_restore": r["rss"]}
    shutil.rmtree(repo)
    shutil.rmtree(target)
    shutil.rmtree(work / "borgbase", ignore_errors=True)
    return res


# ---------------------------------------------------------------- a running libvirt VM


LIVE_DOMAIN = "haven-bench-live"


def _remove_domain(conn, name: str) -> None:
    import libvirt

    try:
        d = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if d.isActive():
        d.destroy()
    for cp in d.listAllCheckpoints():
        cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def _guest_sh(dom, script: str, timeout: float = 300) -> None:
    """Run ``sh -c script`` in the guest through its agent and wait for it to exit 0."""
    import base64

    import libvirt_qemu

    cmd = {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}}
    pid = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 30, 0))["return"]["pid"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = json.loads(libvirt_qemu.qemuAgentCommand(
            dom, json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}}), 30, 0))["return"]
        if st.get("exited"):
            if st.get("exitcode"):
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                raise RuntimeError(f"guest command failed ({st['exitcode']}): {err[-2000:]}")
            return
        time.sleep(0.2)
    raise TimeoutError("guest command still running")


def _wait_guest_agent(dom, timeout: float = 240) -> None:
    import libvirt
    import libvirt_qemu

    end = time.monotonic() + timeout
    while True:
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
            return
        except libvirt.libvirtError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def rewrite_inside_guest(dom, disk_bytes: int, fraction: float, seed: int) -> int:
    """Rewrite ``fraction`` of /dev/vdb inside the guest (``dd``, then ``sync``: QEMU sees the writes,
    so every dirty bitmap does), in scattered pieces of 64 KiB - 1 MiB at 64 KiB-aligned offsets in
    the disk's second half, copied from offsets of its first half that are not 4 KiB-aligned (so no
    tool can deduplicate them against the copy's source). The same seed writes the same bytes to the
    same places whatever was rewritten before: each tool's incremental sees the same change, and the
    disk ends in the same state for all of them."""
    import random

    rng = random.Random(seed)
    half = disk_bytes // 2
    budget, lines, total = int(disk_bytes * fraction), [], 0
    while budget > 0:
        n = min(budget, rng.randrange(1, 17) * (64 << 10))
        dest = half + rng.randrange(0, (half - n) // (64 << 10)) * (64 << 10)
        src = rng.randrange(1, (half - n) // 512) | 1  # in 512-byte sectors, odd
        lines.append(f"dd if=/dev/vdb of=/dev/vdb bs=512 skip={src} seek={dest // 512} count={n // 512} conv=notrunc 2>/dev/null")
        budget -= n
        total += n
    _guest_sh(dom, " && ".join(lines + ["sync"]))
    return total


def _drop_checkpoints(dom) -> None:
    """Delete every checkpoint of the domain with its bitmaps (virtnbdbackup refuses to run beside
    another tool's checkpoints, so each tool's chain runs alone)."""
    import libvirt

    for cp in reversed(dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)):
        cp.delete(0)


def live_rounds(srv: Served, cache: Cache, work: Path, repeat: int, data_size: int) -> list[dict]:
    from tests.services import libvirtd as lvd

    ok, why = lvd.available()
    if not ok:
        print(f"live: skipped ({why})", flush=True)
        return []
    daemon = lvd.start()
    try:
        return _live(srv, cache, work, repeat, data_size)
    finally:
        daemon.stop()  # stops only a libvirtd this run started


def _live(srv: Served, cache: Cache, work: Path, repeat: int, data_size: int) -> list[dict]:
    import libvirt

    from bench import mixgen
    from tests.services import testvm
    from tests.services._util import start, stop
    from tests.services.guest_domain import domain_xml

    images = testvm.ensure_images()
    lw = work / "live"
    shutil.rmtree(lw, ignore_errors=True)
    lw.mkdir(parents=True)
    os.chmod(lw, 0o755)
    vda = testvm.new_disk(images, lw / "vda.qcow2")
    raw = lw / "vdb.raw"
    mixgen.generate(raw, data_size, 11)
    vdb = lw / "vdb.qcow2"
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(vdb)])
    raw.unlink()
    conn = libvirt.open("qemu:///system")
    names = [f"{LIVE_DOMAIN}-{i}" for i in range(repeat)]
    for n in names:
        _remove_domain(conn, n)

    def boot(name: str):
        """The same disks as a new VM: a VM's protected item lives in one vault for good, and each
        repetition starts from an empty vault."""
        for kvm in ((True, False) if os.access("/dev/kvm", os.R_OK | os.W_OK) else (False,)):
            d = conn.defineXML(domain_xml(name, images, [vda, vdb], lw / "console.log", mac=None, memory_mib=512, kvm=kvm))
            try:
                d.create()
                _wait_guest_agent(d)
                return d
            except libvirt.libvirtError as exc:  # KVM present but unusable (nested virtualisation): TCG
                print(f"live: {'KVM' if kvm else 'TCG'} failed: {str(exc)[:200]}", flush=True)
                _remove_domain(conn, name)
                if not kvm:
                    raise
        raise RuntimeError("unreachable")

    agent = None
    results: list[dict] = []
    try:
        token = lw / "agent-token"
        srv.cli("host", "add", "--name", "lv", "--region", "local", "--adapter", "qemu:///system", "--share", SUB,
                "--token-file", str(token))
        ahome = lw / "agent-home"
        ahome.mkdir()
        storage = srv.home / "storage"
        for i, name in enumerate(names):
            if i:
                _remove_domain(conn, names[i - 1])
            dom = boot(name)
            if agent is None:
                agent = start([PY, "-m", "haven.cli.main", "agent", "--server", srv.url, "--token-file", str(token),
                               "--adapter", "qemu:///system", "--home", str(ahome)], ahome / "agent.log",
                              env={"PYTHONPATH": ENV["PYTHONPATH"], "HAVEN_HOME": str(ahome)})
            end = time.monotonic() + 120  # the agent reports its VMs every 30 s
            while not any(v.get("name") == name for v in srv.cli("vm", "list") or []):
                if time.monotonic() > end or agent.poll() is not None:
                    raise RuntimeError(f"the agent never reported {name}: {(ahome / 'agent.log').read_text()[-2000:]}")
                time.sleep(1)
            r: dict[str, dict] = {"haven": {}, "vnb": {}, "vnb-z": {}}
            vault = f"v-live-{i}"
            srv.cli("vault", "create", "-s", SUB, "-n", vault, "-l", "local")
            srv.cli("protection", "enable-for-vm", "-s", SUB, "-v", vault, "--vm", name)
            vnb, vnbz = lw / f"vnb-{i}", lw / f"vnbz-{i}"
            seed = 100 + i  # the same 1% for every tool in this repetition (see rewrite_inside_guest)
            _drop_checkpoints(dom)
            before = du(storage)
            full = served_backup(srv, cache, vault, name)
            r["haven"].update(full=full["s"], full_job=full["job_s"], stored=du(storage) - before, rss_full=full["rss"],
                              read_full=full["job"]["result"].get("bytes_read"))
            written = rewrite_inside_guest(dom, data_size, 0.01, seed)
            mid = du(storage)
            inc = served_backup(srv, cache, vault, name)
            r["haven"].update(incremental=inc["s"], incremental_job=inc["job_s"], growth=du(storage) - mid,
                              read_incremental=inc["job"]["result"].get("bytes_read"), written=written)
            for key, out, z in (("vnb", vnb, []), ("vnb-z", vnbz, ["-z"])):
                _drop_checkpoints(dom)  # virtnbdbackup refuses to start beside Haven's checkpoint
                r[key]["full"] = timed(cache, ["virtnbdbackup", "-d", name, "-l", "full", *z, "-o", str(out)])["s"]
                r[key]["stored"] = du(out)
                rewrite_inside_guest(dom, data_size, 0.01, seed)
                mid = du(out)
                r[key]["incremental"] = timed(cache, ["virtnbdbackup", "-d", name, "-l", "inc", *z, "-o", str(out)])["s"]
                r[key]["growth"] = du(out) - mid
            _drop_checkpoints(dom)
            # restores: Haven's incremental point, virtnbdbackup's chain (full + incremental: the same state)
            point = inc["job"]["result"]["recovery_point_id"]
            target = lw / "restore-haven"
            shutil.rmtree(target, ignore_errors=True)
            rest = served_restore(srv, cache, vault, name, point, target, host="lv")
            r["haven"].update(restore=rest["s"], restore_job=rest["job_s"], rss_restore=rest["rss"])
            for key, src in (("vnb", vnb), ("vnb-z", vnbz)):
                out = lw / f"restore-{key}"
                shutil.rmtree(out, ignore_errors=True)
                r[key]["restore"] = timed(cache, ["virtnbdrestore", "-i", str(src), "-o", str(out)])["s"]
            restored_vdb = next((target).glob("vdb*"))
            vnb_vdb = next((lw / "restore-vnb").glob("vdb*"))
            cmp = subprocess.run(["qemu-img", "compare", "-q", str(restored_vdb), str(vnb_vdb)])
            r["haven"]["restore_matches_vnb"] = cmp.returncode == 0
            for p in (target, lw / "restore-vnb", lw / "restore-vnb-z", vnb, vnbz):
                shutil.rmtree(p, ignore_errors=True)
            print("live", i, json.dumps(r, default=str), flush=True)
            results.append(r)
    finally:
        if agent is not None:
            stop(agent)
        for n in names:
            _remove_domain(conn, n)
        conn.close()
    return results


# ---------------------------------------------------------------- summary


def medians(rounds: list[dict]) -> dict:
    out: dict[str, dict] = {}
    tools = {t for r in rounds for t in r}
    for t in sorted(tools):
        keys = {k for r in rounds for k, v in r.get(t, {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out[t] = {k: statistics.median(r[t][k] for r in rounds if isinstance(r.get(t, {}).get(k), (int, float))) for k in sorted(keys)}
    return out


def ratios(med: dict, base: str, others: list[str], keys: list[str]) -> dict:
    out = {}
    for o in others:
        for k in keys:
            if med.get(o, {}).get(k) and med.get(base, {}).get(k):
                out[f"{o}/{base} {k}"] = round(med[o][k] / med[base][k], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small images, one repetition (about 5 minutes)")
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/haven-bench-served"))
    ap.add_argument("--workloads", default="synthetic,mixed,ext4-usr,guest")
    ap.add_argument("--size-gib", type=float, help="size of the synthetic and mixed images (default 2, quick 0.5)")
    ap.add_argument("--live-gib", type=float, help="size of the running VM's data disk (default 1, quick 0.25)")
    ap.add_argument("--no-live", action="store_true")
    ap.add_argument("--src", type=Path, help="run the haven of another checkout's src/ (to compare versions)")
    a = ap.parse_args()
    if a.src:
        ENV["PYTHONPATH"] = str(a.src.resolve()) + os.pathsep + str(ROOT)
    repeat = a.repeat or (1 if a.quick else 3)
    started = time.time()
    a.work.mkdir(parents=True, exist_ok=True)
    size = int((a.size_gib or (0.5 if a.quick else 2.0)) * GiB)
    imgs = build_workloads(a.work, a.quick, [w for w in a.workloads.split(",") if w], size)
    home = a.work / "home"
    shutil.rmtree(home, ignore_errors=True)
    (home / "vms").mkdir(parents=True)
    for name, img in imgs.items():
        for i in range(repeat):
            folder = home / "vms" / f"{name}-{i}"
            folder.mkdir()
            os.link(img, folder / "vda.raw")
            (folder / "vm.json").write_text(json.dumps({"name": f"{name}-{i}", "disks": [{"name": "vda", "file": "vda.raw", "format": "raw"}]}))
    cache = Cache([a.work])
    print(f"page cache: {cache.method}; load: {os.getloadavg()}", flush=True)
    srv = Served(home)
    srv.start()
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)), "cache": cache.method,
                     "load_before": os.getloadavg(), "nproc": os.cpu_count(),
                     "quick": a.quick, "repeat": repeat, "workloads": {}, "live": {}}
    try:
        srv.cli("subscription", "create", "--name", SUB)
        scratch = a.work / "scratch"
        for name, img in imgs.items():
            rounds = []
            for i in range(repeat):
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
                rounds.append(stopped_vm_round(name, img, i, srv, cache, scratch))
                print(name, i, json.dumps(rounds[-1]), flush=True)
            med = medians(rounds)
            results["workloads"][name] = {"image": describe(img), "runs": rounds, "median": med,
                                          "ratios": {**ratios(med, "haven-served", ["restic", "borg-lz4"], ["full", "restore", "stored"]),
                                                     **ratios(med, "haven-engine", ["haven-served"], ["full", "restore"])}}
        shutil.rmtree(scratch, ignore_errors=True)
        if not a.no_live:
            live = int((a.live_gib or (0.25 if a.quick else 1.0)) * GiB)
            try:
                rounds = live_rounds(srv, cache, a.work, repeat, live)
            except Exception as e:  # a libvirtd that went away (shared machine): keep the stopped-VM results
                print(f"live: failed ({type(e).__name__}: {e})", flush=True)
                results["live_error"], rounds = f"{type(e).__name__}: {e}", []
            if rounds:
                med = medians(rounds)
                results["live"] = {"runs": rounds, "median": med,
                                   "ratios": ratios(med, "haven", ["vnb", "vnb-z"], ["full", "incremental", "restore", "stored", "growth"])}
    finally:
        srv.stop()
    results["seconds"] = round(time.time() - started)
    results["load_after"] = os.getloadavg()
    (a.work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_summary(results)


def print_summary(results: dict) -> None:
    for name, w in results["workloads"].items():
        print(f"\n## {name} ({w['image']['size'] / GiB:.2f} GiB, {w['image']['allocated'] / MiB:.0f} MiB allocated)")
        med = w["median"]
        print("| tool | full s | restore s | stored MiB | peak RSS full / restore MiB |")
        print("|---|---|---|---|---|")
        for t, m in med.items():
            rss = f"{m.get('rss_full', 0) / MiB:.0f} / {m.get('rss_restore', 0) / MiB:.0f}" if "rss_full" in m else "-"
            print(f"| {t} | {m['full']:.2f} | {m['restore']:.2f} | {m['stored'] / MiB:.1f} | {rss} |")
        print("ratios:", json.dumps(w["ratios"]))
        hs = med.get("haven-served", {})
        if "full_job" in hs:  # where the served wall time goes: the job itself, its wait in the queue, the rest
            print(f"haven-served: full {hs['full']:.2f} s = job {hs['full_job']:.2f} + queued {hs.get('full_queued', 0):.2f}"
                  f" + CLI and API {hs['full'] - hs['full_job'] - hs.get('full_queued', 0):.2f}; restore {hs['restore']:.2f} s"
                  f" = job {hs['restore_job']:.2f} + queued {hs.get('restore_queued', 0):.2f} + CLI and API"
                  f" {hs['restore'] - hs['restore_job'] - hs.get('restore_queued', 0):.2f}; `haven version` cold {hs.get('cli_start', 0):.2f} s")
    if results.get("live"):
        print("\n## running libvirt VM")
        for t, m in results["live"]["median"].items():
            print(t, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()}))
        print("ratios:", json.dumps(results["live"]["ratios"]))
    print(f"\nwall time {results['seconds']} s, load after {results['load_after']}")


if __name__ == "__main__":
    main()

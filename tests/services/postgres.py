"""A throwaway PostgreSQL cluster from Debian's package: initdb + pg_ctl on a free port.

initdb refuses to run as root, so the cluster belongs to the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.services._util import free_port, require

__all__ = ["PostgresServer", "find_pg_bin"]


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent pid, …), or None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children(pid: int) -> list[int]:
    """Read from /proc: a bare Debian has no procps (pgrep)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and (_stat(p) or ["", ""])[1] == str(pid)]


def find_pg_bin() -> Path | None:
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self):
        self.bindir = find_pg_bin()
        require(self.bindir is not None, "PostgreSQL server binaries (apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="haven-pg-"))
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if self._as_root:
            require(shutil.which("runuser") is not None, "runuser")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> "PostgresServer":
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        sock = self.dir / "sock"
        sock.mkdir()
        if self._as_root:
            shutil.chown(sock, "postgres", "postgres")
        self._run(self.bindir / "initdb", "-D", self.dir / "data", "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self._opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o", self._opts, "start")

    def kill(self) -> int:
        """SIGKILL the postmaster and every backend at once, as a crash would; returns how many died."""
        import signal

        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        pids = [postmaster, *_children(postmaster)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Where nothing reaps them (a container's PID 1), the dead stay as zombies and PostgreSQL
        # would take the stale postmaster.pid for a live server: remove it once they are all dead.
        for pid in pids:
            while _alive(pid):
                time.sleep(0.05)
        (self.dir / "data" / "postmaster.pid").unlink(missing_ok=True)
        for stale in (self.dir / "sock").glob(f".s.PGSQL.{self.port}*"):  # its socket and the socket's lock file
            stale.unlink()
        return len(pids)

    def restart(self) -> None:
        """Start the cluster again after ``kill`` (PostgreSQL runs crash recovery)."""
        self._pg_ctl_start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(self.bindir / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

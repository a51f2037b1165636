"""A throwaway PostgreSQL cluster from Debian's package: initdb + pg_ctl on a free port.

initdb refuses to run as root, so the cluster belongs to the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.services._util import free_port, require

__all__ = ["PostgresServer", "find_pg_bin"]


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
        opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(self.bindir / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o", opts, "start")
        return self

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

"""Finding 10 of issue 16 — Haven's files are private: a real ``haven serve`` (started with the usual
umask 022) makes its home 0700 and its database, -wal, -shm, master key and credentials 0600; a
home left loose (an older version, a copy) is tightened at the next start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services.haven_server import HavenServer

SECRETS = ("haven.db", "haven.db-wal", "haven.db-shm", "master.key", "credentials.json")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the server inherits it: files are 0644 unless Haven says otherwise
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def modes(home: Path) -> dict[str, str]:
    return {"home": mode(home), **{name: mode(home / name) for name in SECRETS}}


def start_and_use(home: Path, sub: str = "modes") -> HavenServer:
    server = HavenServer(home).start()
    with httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {server.token}"}, timeout=30) as c:
        c.post("/subscriptions", json={"name": sub}).raise_for_status()
        c.post(f"/subscriptions/{sub}/vaults", json={"name": "v1", "region": "local"}).raise_for_status()  # the master key is used
    return server


def test_a_new_home_is_private(tmp_path, loose_umask):
    home = tmp_path / "fresh-home"
    server = start_and_use(home)
    try:
        assert modes(home) == {"home": "0o700", **{name: "0o600" for name in SECRETS}}
    finally:
        server.stop()


def test_a_loose_home_is_tightened_at_start(tmp_path, loose_umask):
    home = tmp_path / "old-home"
    server = start_and_use(home)
    server.stop()
    for name in SECRETS:
        if (home / name).exists():
            os.chmod(home / name, 0o644)
    os.chmod(home, 0o755)
    assert mode(home / "haven.db") == "0o644"
    server = start_and_use(home, "modes-again")
    try:
        assert modes(home) == {"home": "0o700", **{name: "0o600" for name in SECRETS}}
    finally:
        server.stop()

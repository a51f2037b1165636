"""Fixtures shared by the whole suite: the metadata store on SQLite and PostgreSQL, a Haven core,
the API with an Owner token. Service fixtures live in tests/services/ and in each folder's conftest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from haven.clock import FakeClock
from haven.config import RegionConfig, load_settings
from haven.services.core import Haven
from tests.services.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """The metadata store tests run on both engines."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'haven.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / "vms").mkdir(parents=True)
    return h


@pytest.fixture
def core(home: Path, db_url: str, clock: FakeClock) -> Iterator[Haven]:
    regions = (
        RegionConfig("local", f"file://{home / 'storage' / 'local'}", paired_region="paired"),
        RegionConfig("paired", f"file://{home / 'storage' / 'paired'}", paired_region="local"),
    )
    settings = load_settings(home, database_url=db_url, job_lease_seconds=5.0, regions=regions)
    app = Haven(settings, clock=clock)
    yield app
    app.close()


@pytest.fixture
def owner_token(core: Haven, home: Path) -> str:
    return core.auth.bootstrap_local_owner(home / "credentials.json", "http://testserver")


@pytest.fixture
def api(core: Haven, owner_token: str) -> Iterator[TestClient]:
    from haven.api.app import create_app

    with TestClient(create_app(core), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {owner_token}"
        yield client

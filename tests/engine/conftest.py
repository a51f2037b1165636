"""Engine fixtures: a key, a repository on a local folder, and backends of every kind."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest

from haven.engine import LocalBackend, LocalKeyWrapper, Repository, open_backend

from .faulty import faults_exercised  # noqa: F401  (every fault a test plans must fire)

try:  # the service fixtures live in tests/services (importable as 'services' or 'tests.services')
    from services._util import free_port, wait_for_port
    from services.azurite import azurite  # noqa: F401
    from services.s3 import s3_server  # noqa: F401
except ImportError:  # pragma: no cover
    from tests.services._util import free_port, wait_for_port
    from tests.services.azurite import azurite  # noqa: F401
    from tests.services.s3 import s3_server  # noqa: F401

MASTER = b"haven-test-master-key-0123456789"
_counter = itertools.count()


@pytest.fixture
def kek() -> LocalKeyWrapper:
    return LocalKeyWrapper(MASTER)


@pytest.fixture
def local_backend(tmp_path) -> LocalBackend:
    return LocalBackend(tmp_path / "vault")


@pytest.fixture
def repo(local_backend, kek) -> Repository:
    r = Repository.init(local_backend, kek, {"name": "test-vault", "region": "here"})
    return r


# ---- Haven's storage endpoint, served by uvicorn in a thread ----

TOKEN = "token-for-tests"


@pytest.fixture(scope="session")
def haven_endpoint(tmp_path_factory):
    """A uvicorn server mounting the storage router; folder vaults under a temp dir. Yields base URL."""
    import uvicorn
    from fastapi import FastAPI

    from haven.api.storage_endpoint import storage_router
    from haven.services.objects import ObjectService
    from haven.errors import Forbidden, Unauthenticated

    root = tmp_path_factory.mktemp("endpoint")

    def resolve(token: str, vault_id: str):
        if token != TOKEN:
            raise Unauthenticated()
        if not vault_id.startswith("v-"):
            raise Forbidden()
        return LocalBackend(root / vault_id)

    app = FastAPI()
    app.include_router(storage_router(ObjectService(resolve)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


BACKENDS = ["local", "azure", "s3", "haven"]


@pytest.fixture(params=BACKENDS)
def any_backend(request, tmp_path):
    """A fresh, empty backend of each kind (opened through ``open_backend``, so with retries)."""
    kind = request.param
    unique = f"t{next(_counter)}-{uuid.uuid4().hex[:8]}"
    if kind == "local":
        b = open_backend(f"file://{tmp_path}/vault")
    elif kind == "azure":
        conn = request.getfixturevalue("azurite")
        b = open_backend(f"azure://{unique}", connection_string=conn)
    elif kind == "s3":
        opts = request.getfixturevalue("s3_server")
        b = open_backend(f"s3://{unique}/vault", **opts)
    else:
        base = request.getfixturevalue("haven_endpoint").replace("http://", "haven+http://")
        b = open_backend(f"{base}/v-{unique}", token=TOKEN)
    b.prepare()
    yield b
    b.close()

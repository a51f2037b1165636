"""Key vault fixtures: a core with a subscription, an Owner caller, and the service."""

from __future__ import annotations

import pytest

from haven.services.keyvault import keyvault_service


@pytest.fixture
def root(core, home):
    return core.auth.authenticate(core.auth.bootstrap_local_owner(home / "credentials.json", "http://testserver"))


@pytest.fixture
def kvs(core, root):
    core.subscriptions.create(root, "prod")
    return keyvault_service(core)


def user(core, root, name: str, role: str, subscription: str = "prod"):
    return core.auth.authenticate(core.auth.create_token(root, name, role, subscription)["token"])

"""Opens a vault's storage: its backend (from the vault's storage URL) and its repository.

The vault's data key is wrapped by a key-encryption key; for now that KEK is derived from the
server's master key (``$HAVEN_HOME/master.key``, made on first start, readable by its owner only).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from haven.errors import PreconditionFailed

__all__ = ["StorageService", "load_or_create_master_key", "MasterKeyMissing"]

log = logging.getLogger(__name__)


class MasterKeyMissing(PreconditionFailed):
    code = "UserErrorMasterKeyMissing"
    message = "The server's master key {path} is missing or unreadable, so no vault can be opened."
    recommendation = "Restore the master key file from your safe copy; without it the vaults' data keys cannot be unwrapped."


def load_or_create_master_key(path: Path, create: bool = True) -> bytes:
    if path.exists():
        key = path.read_bytes()
        if len(key) != 32:
            raise MasterKeyMissing(path=str(path))
        return key
    if not create:
        raise MasterKeyMissing(path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


class StorageService:
    def __init__(self, core, backend_options: dict | None = None):
        self.core = core
        self.backend_options = backend_options or {}
        self._master: bytes | None = None

    def master_key(self) -> bytes:
        if self._master is None:
            self._master = load_or_create_master_key(self.core.settings.master_key_path)
        return self._master

    def kek(self):
        from haven.engine import LocalKeyWrapper

        return LocalKeyWrapper(self.master_key())

    def region_storage(self, storage_url: str):
        """``[regions.storage]`` of the region ``storage_url`` lies in (a ``RegionStorage``), or None."""
        from haven.transport.credentials import region_for_url

        region = region_for_url(self.core.settings.regions, storage_url)
        return region.storage if region is not None else None

    def options_for(self, storage_url: str) -> dict:
        """The backend options of ``storage_url``: its region's endpoint and credentials from haven.toml (secrets read
        now: a typed ``StorageSecretUnreadable`` when one cannot be), overridden by the options this server was built with."""
        from haven.transport.credentials import storage_options

        storage = self.region_storage(storage_url)
        options = dict(storage_options(storage)) if storage is not None else {}
        options.update(self.backend_options.get(storage_url.split("://", 1)[0], {}))
        return options

    def backend(self, storage_url: str):
        # The host agent's path: its proxy (agent.conf / http(s)_proxy), typed proxy and time-out errors, retries.
        from haven.transport import open_agent_backend

        return open_agent_backend(storage_url, self.options_for(storage_url), home=self.core.settings.home)

    def init_vault(self, vault, subscription) -> None:
        from haven.engine import Repository

        info = {"vault_id": vault.id, "vault_name": vault.name, "subscription": subscription.name, "region": vault.region}
        Repository.init(self.backend(vault.storage_url), self.kek(), info)

    def kek_for(self, vault):
        """The key-encryption key of a vault: a key-vault key when one is set, else the master key."""
        if vault.kek_key_vault and vault.kek_key:
            return self.core.keyvault.key_wrapper(vault.subscription_id, vault.kek_key_vault, vault.kek_key)
        return self.kek()

    def open(self, vault, kek=None):
        """The vault's repository. A vault of the first key format (its wrapped data key names no
        vault) is rewrapped to the bound format here, on its first open by this server."""
        from haven.engine import Repository

        kek = kek or self.kek_for(vault)
        repo = Repository.open(self.backend(vault.storage_url), kek, clock=self.core.clock)
        if repo.migrate_key(kek):
            log.info("vault %s: data key rewrapped bound to the vault (key format %s)", vault.id, repo.config["key"]["format"])
        return repo

    def rewrap(self, vault, new_kek) -> str:
        """Re-seal the vault's data key under ``new_kek``: no data object is rewritten. Returns the new KEK id."""
        old = self.kek_for(vault)
        repo = self.open(vault, old)
        repo.rewrap(new_kek, old)
        return repo.kek_id

"""The application core: one object that composes the services a process needs.

``Haven(settings)`` opens the metadata store (migrating it), syncs the configured regions and
wires every service. The API, the CLI's local commands and the tests build exactly this.
"""

from __future__ import annotations

import threading

from haven.clock import Clock, SystemClock
from haven.config import Settings
from haven.db.session import Database
from haven.files import secure_home
from haven.jobs.queue import JobQueue
from haven.services.agents import AgentService
from haven.services.alerts import AlertService
from haven.services.auth import AuthService
from haven.services.capabilities import StorageCapabilities
from haven.services.guard import GuardService
from haven.services.inventory import InventoryService
from haven.services.jobs import JobService
from haven.services.keyvault import KeyVaultService
from haven.services.lifecycle import Lifecycle
from haven.services.points import PointService
from haven.services.prepare import PrepareService
from haven.services.policies import PolicyService
from haven.services.protection import ProtectionService
from haven.services.replication import Replication
from haven.services.restore import RestoreService
from haven.services.sessions import WebSessionService
from haven.services.storage import StorageService
from haven.services.subscriptions import RegionService, SubscriptionService
from haven.services.support import SupportRules
from haven.services.vaults import VaultService

__all__ = ["Haven", "AdapterRegistry"]


class AdapterRegistry:
    """Hypervisor adapters by URL, opened once per process."""

    def __init__(self, allowed_disk_roots: tuple = (), min_agent_version: str | None = None):
        self._open: dict[str, object] = {}
        self._lock = threading.Lock()
        self.allowed_disk_roots = allowed_disk_roots
        self.min_agent_version = min_agent_version

    def for_url(self, url: str):
        from haven.hypervisor import adapter_options, open_adapter

        with self._lock:
            if url not in self._open:
                self._open[url] = open_adapter(url, **adapter_options(url, self.allowed_disk_roots, self.min_agent_version))
            return self._open[url]

    def for_host(self, host):
        return self.for_url(host.adapter_url)


class Haven:
    def __init__(self, settings: Settings, clock: Clock | None = None, db: Database | None = None,
                 backend_options: dict | None = None):
        self.settings = settings
        self.clock = clock or SystemClock()
        secure_home(settings.home, settings.database_url, (settings.master_key_path, settings.credentials_path))
        self.db = db or Database(settings.database_url)
        self.queue = JobQueue(self.db, self.clock, settings.job_lease_seconds,
                              settings.max_backups_per_host, settings.max_backups_per_vault)
        self.auth = AuthService(self)
        self.web_sessions = WebSessionService(self)
        self.subscriptions = SubscriptionService(self)
        self.regions = RegionService(self)
        self.vaults = VaultService(self)
        self.guard = GuardService(self)
        self.policies = PolicyService(self)
        self.inventory = InventoryService(self)
        self.protection = ProtectionService(self)
        self.support = SupportRules(self)
        self.jobs = JobService(self)
        self.points = PointService(self)
        self.storage = StorageService(self, backend_options)
        self.capabilities = StorageCapabilities(self)
        self.keyvault = KeyVaultService(self)
        self.prepare = PrepareService(self)
        self.keyvault.recovery_point_key_backup = self.points.key_backup
        self.lifecycle = Lifecycle(self)
        self.restore = RestoreService(self)
        self.replication = Replication(self)
        self.alerts = AlertService(self)
        self.adapters = AdapterRegistry(settings.allowed_disk_roots, settings.min_guest_agent_version)
        self.agents = AgentService(self)
        self.regions.sync_from_settings()

    def job_handlers(self) -> dict:
        from haven.services.handlers import handlers

        return handlers(self)

    def close(self) -> None:
        self.db.dispose()

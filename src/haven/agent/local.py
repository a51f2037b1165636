"""The host agent that ``haven serve`` runs in-process for the server's own host.

It registers the host in the local region, reports the VMs its hypervisor adapter sees, and runs
the backup and restore jobs of that host. A remote host runs the same loop through ``haven agent``.
"""

from __future__ import annotations

import logging
import socket
import threading

from haven.jobs.runner import JobRunner

__all__ = ["LocalAgent"]

log = logging.getLogger(__name__)


class LocalAgent:
    def __init__(self, core, adapter_url: str, host_name: str | None = None, region: str | None = None,
                 inventory_interval: float = 30.0, workers: int = 2):
        self.core, self.adapter_url = core, adapter_url
        self.host_name = host_name or socket.gethostname().split(".")[0] or "localhost"
        self.region = region or core.settings.local_region
        self.interval, self.workers = inventory_interval, workers
        self.host_id: str | None = None
        self.runner: JobRunner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> str:
        view, _ = self.core.inventory.register_host(None, self.host_name, self.region, self.adapter_url)
        self.host_id = view["id"]
        return self.host_id

    def refresh_inventory(self) -> int:
        return self.core.inventory.refresh_host(self.host_id, self.adapter_url)

    def start(self) -> None:
        if self.host_id is None:
            self.register()
        self.refresh_inventory()
        self.runner = JobRunner(self.core.queue, self.core.job_handlers(), workers=self.workers,
                                name=f"agent-{self.host_name}", host_id=self.host_id, on_failure=self.core.alerts.job_failed)
        self.runner.start()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.runner:
            self.runner.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh_inventory()
            except Exception:
                log.exception("inventory refresh failed")

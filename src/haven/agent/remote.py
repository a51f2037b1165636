"""``haven agent``: the host agent on a hypervisor host other than the server's.

It talks to the server's agent API with its host's credential: says hello, reports the VMs its
adapter sees, claims the jobs queued for its host, carries them out (``haven.work.HOST_JOBS``) with
the data going straight to the vault's storage (the server's storage endpoint for folder vaults),
renews each job's lease and reports progress while it works, then completes or fails the job.
The minimum guest-agent version it applies is the server's (one minimum), given at hello and with each
inventory round's answer, never its own host's setting.
It never holds a vault's key-encryption key: the server unwraps the vault's data key for a job the
agent holds the lease of, and the key lives only in the agent's memory for that job. Its own token
opens no vault on the storage endpoint: it uses the capability each job claim answers with (and,
for its connectivity probe, the probe-only capability ``/agent/storage-targets`` hands out).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from pathlib import Path

from haven import __version__
from haven.transport.client import ApiClient, ServerUnreachable
from haven.errors import HavenError, InternalError
from haven.jobs.queue import LeaseLost
from haven.jobs.runner import JobCancelled, WorkContext
from haven.work import HOST_JOBS, Host, host_job

__all__ = ["RemoteAgent", "RemoteJobContext", "ServerKeyWrapper"]

log = logging.getLogger(__name__)

JOB_TYPES = tuple(t.value for t in HOST_JOBS)


class ServerKeyWrapper:
    """A ``KeyWrapper`` that asks the server for the data key of one job's vault (whose lease this agent
    holds). The server answers only for the key wrapped in that vault's own ``config``, checked against
    its binding, so ``Repository.open`` takes the answer as the data key (``unwrap_data_key``)."""

    def __init__(self, api: ApiClient, job_id: str, worker: str, key_id: str):
        self.api, self.job_id, self.worker, self.key_id = api, job_id, worker, key_id

    def wrap(self, plaintext: bytes) -> bytes:
        raise InternalError("A host agent never wraps vault keys; vaults are made on the server.")

    def unwrap(self, wrapped: bytes) -> bytes:
        return self.unwrap_data_key(wrapped)

    def unwrap_data_key(self, wrapped: bytes) -> bytes:
        answer = self.api.post(f"/agent/jobs/{self.job_id}/unwrap",
                               {"worker": self.worker, "wrapped": base64.b64encode(wrapped).decode()})
        return base64.b64decode(answer["key"])


class RemoteJobContext(WorkContext):
    """A job's context over the agent API: progress is sent at most every ``every`` seconds."""

    def __init__(self, api: ApiClient, job_id: str, worker: str, every: float = 1.0):
        super().__init__(job_id)
        self.api, self.worker, self.every = api, worker, every
        self._warnings: list[str] = []
        self._sent = 0.0

    def _publish(self, subtasks: list[dict], changed: bool) -> None:
        if changed or time.monotonic() - self._sent >= self.every:
            self.flush()

    def warn(self, message: str) -> None:
        with self._lock:
            self._warnings.append(message)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            subtasks, warnings = [dict(t) for t in self._subtasks], self._warnings
            self._warnings = []
        self._sent = time.monotonic()
        try:
            self.api.post(f"/agent/jobs/{self.job_id}/progress", {"worker": self.worker, "subtasks": subtasks, "warnings": warnings})
        except HavenError as e:  # progress is best effort; the lease decides whether the job lives
            log.warning("job %s: progress not sent: %s", self.job_id, e)
            with self._lock:
                self._warnings = warnings + self._warnings


class RemoteAgent:
    def __init__(self, server: str, token: str, adapter_url: str, workers: int = 1, poll: float = 1.0,
                 inventory_interval: float = 30.0, backend_options: dict | None = None, home=None):
        self.api = ApiClient(server, token)
        self.server, self.token, self.adapter_url = server.rstrip("/"), token, adapter_url
        self.workers, self.poll, self.interval = workers, poll, inventory_interval
        self.backend_options = backend_options or {}
        if home is None:
            from haven.config import default_home

            home = default_home()
        self.home = Path(home)
        self.lease_seconds = 60.0
        self.host: dict | None = None
        self.min_agent_version: str | None = None  # the server's; None until it said (an older server: our own setting)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._adapter = None

    # ---- life cycle ----
    def start(self) -> dict:
        self.host = self.api.post("/agent/hello", {"adapter": self.adapter_url, "version": __version__, "job_types": list(JOB_TYPES)})
        self.lease_seconds = float(self.host["lease_seconds"])
        self._apply_server_settings(self.host)
        self.report_vms()  # a wrong adapter fails the start, loudly
        self._report_quietly(vms=False, network=True)
        for i in range(self.workers):
            self._spawn(self._work_loop, f"{uuid.uuid4().hex[:12]}-{i}")
        self._spawn(self._inventory_loop)
        return self.host

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def wait(self) -> None:
        """Block until ``stop`` (Ctrl-C reaches the caller between the one-second waits)."""
        while not self._stop.wait(1.0):
            pass

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def adapter(self):
        if self._adapter is None:
            from haven.config import load_settings
            from haven.hypervisor import adapter_options, open_adapter

            settings = load_settings(self.home)
            minimum = self.min_agent_version or settings.min_guest_agent_version
            self._adapter = open_adapter(self.adapter_url, **adapter_options(self.adapter_url, settings.allowed_disk_roots, minimum))
        return self._adapter

    def _apply_server_settings(self, answer: dict) -> None:
        """Take the server's minimum guest-agent version (it may change when the server restarts with new settings)."""
        minimum = answer.get("min_guest_agent_version")
        if not minimum or minimum == self.min_agent_version:
            return
        if self.min_agent_version is not None:
            log.info("the server's minimum guest-agent version is now %s", minimum)
        self.min_agent_version = minimum
        if self._adapter is not None:
            self._adapter.min_agent_version = minimum

    def report_vms(self) -> int:
        from haven.hypervisor.guest import probe_inventory

        vms = [vm.to_dict() for vm in probe_inventory(self.adapter)]
        answer = self.api.put("/agent/vms", {"vms": vms})
        self._apply_server_settings(answer)
        return answer["reported"]

    def _inventory_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._report_quietly(network=True)

    def _report_quietly(self, vms: bool = True, network: bool = False) -> None:
        for wanted, report in ((vms, self.report_vms), (network, self.check_network)):
            if not wanted:
                continue
            try:
                report()
            except Exception:  # the next round reports again
                log.exception("%s failed", report.__name__)

    # ---- jobs ----
    def _work_loop(self, worker: str) -> None:
        while not self._stop.is_set():
            try:
                job = self.api.post("/agent/jobs/claim", {"worker": worker, "types": list(JOB_TYPES)})
            except HavenError as e:  # the server is away for a moment: try again
                log.warning("claim failed: %s", e)
                job = None
            if job is None:
                self._stop.wait(self.poll)
                continue
            self.run_job(job, worker)

    def run_job(self, job: dict, worker: str) -> None:
        ctx = RemoteJobContext(self.api, job["id"], worker)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, done), daemon=True)
        beat.start()
        try:
            outcome = self._execute(job, ctx, worker)
            ctx.check_cancelled()
            ctx.flush()
            self._complete(job["id"], worker, outcome)
        except LeaseLost:
            log.warning("job %s: lease lost, nothing recorded", job["id"])
        except JobCancelled as e:
            self._fail(job["id"], worker, e, cancelled=True)
        except HavenError as e:
            self._fail(job["id"], worker, JobCancelled() if ctx.cancel.is_set() and not ctx.lease_lost.is_set() else e,
                       cancelled=ctx.cancel.is_set() and not ctx.lease_lost.is_set())
        except Exception as e:  # a bug: fail the job with the trace in the log, never leave it running
            log.exception("job %s crashed", job["id"])
            self._fail(job["id"], worker, InternalError(f"{type(e).__name__}: {e}"))
        finally:
            done.set()
            beat.join(5)

    def _complete(self, job_id: str, worker: str, outcome: dict, attempts: int = 5) -> None:
        """Report the outcome; a server away for a moment is asked again while the lease lasts."""
        for attempt in range(attempts):
            try:
                self.api.post(f"/agent/jobs/{job_id}/complete", {"worker": worker, "outcome": outcome})
                return
            except ServerUnreachable:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(self.lease_seconds / attempts, 2.0))

    def _execute(self, job: dict, ctx: RemoteJobContext, worker: str) -> dict:
        work = host_job(job["type"])
        if work is None:
            raise InternalError(f"this agent does not run {job['type']} jobs")
        outcome = work.run_wire(job["plan"], Host(self.adapter, self.home / "restored"), self._open_repo(job, worker), ctx)
        if work.changes_inventory:
            self._report_quietly()
        return outcome

    def _open_repo(self, job: dict, worker: str):
        from haven.transport import open_agent_backend
        from haven.engine import Repository

        url, options = self._storage_location(job["storage"])
        backend = open_agent_backend(url, options, home=self.home)
        return Repository.open(backend, ServerKeyWrapper(self.api, job["id"], worker, job["storage"]["kek_id"]))

    def _storage_location(self, storage: dict) -> tuple[str, dict]:
        """URL and backend options of a vault's storage: the server's endpoint with the capability the
        server gave for it (a job's, or a probe's), or the storage itself."""
        if storage["kind"] == "endpoint":
            scheme = "haven+https" if self.server.startswith("https:") else "haven+http"
            return (f"{scheme}://{self.server.split('://', 1)[1]}/{storage['vault_id']}",
                    {**self.backend_options.get("haven", {}), "token": storage.get("capability") or ""})
        # a direct vault (S3, Azure): the region's settings come with the job's claim; the agent's own options win
        return storage["url"], {**storage.get("options", {}), **self.backend_options.get(storage["url"].split("://", 1)[0], {})}

    def check_network(self, timeout: float = 10.0) -> dict[str, dict]:
        """Probe the path (DNS, TCP, proxy, TLS, an authenticated request) to each vault of the region; report it."""
        from haven.transport import agent_config_path, load_agent_config, probe_endpoint

        config = load_agent_config(self.home)
        results = {}
        for target in self.api.get("/agent/storage-targets"):
            url, options = self._storage_location(target["storage"])
            result = probe_endpoint(url, options, config, timeout=timeout, config_path=str(agent_config_path(self.home)))
            results[target["vault_id"]] = {**result.to_dict(), "failed": result.failed.to_dict() if result.failed else None}
        self.api.put("/agent/network", {"config": config.describe(), "vaults": results})
        return results

    def _fail(self, job_id: str, worker: str, error: HavenError, cancelled: bool = False) -> None:
        payload = error.to_payload()["error"]
        try:
            self.api.post(f"/agent/jobs/{job_id}/fail", {"worker": worker, "error": payload, "cancelled": cancelled})
        except HavenError as e:  # the lease runs out and the server's reaper settles the job
            log.warning("job %s: could not report its failure: %s", job_id, e)

    def _heartbeat(self, ctx: RemoteJobContext, done: threading.Event) -> None:
        """Twice a second: renew the lease and look for a stop request. Lease lost: the job stops."""
        last = time.monotonic()
        while not done.wait(0.5):
            try:
                answer = self.api.post(f"/agent/jobs/{ctx.job_id}/heartbeat", {"worker": ctx.worker})
            except HavenError as e:
                if time.monotonic() - last > self.lease_seconds:
                    ctx.lease_lost.set()
                    return
                log.warning("job %s: heartbeat failed: %s", ctx.job_id, e)
                continue
            if not answer["lease"]:
                ctx.lease_lost.set()
                return
            last = time.monotonic()
            if answer["cancel"]:
                ctx.cancel.set()
